//! `Debug` for the API messages that carry a secret's data or a private key (generated
//! without one, see `build.rs`): they show the data's length, never the data.

use std::fmt;

use super::{AdmitResponse, Credentials, HeartbeatResponse, SecretSpec};

/// What a private key shows in `Debug`.
const REDACTED_KEY: &str = "<private key>";

impl fmt::Debug for SecretSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretSpec")
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("data", &format_args!("<{} bytes>", self.data.len()))
            .finish()
    }
}

impl fmt::Debug for HeartbeatResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = |b: &Vec<u8>| format!("<{} bytes>", b.len());
        f.debug_struct("HeartbeatResponse")
            .field("period_ms", &self.period_ms)
            .field("leader_addr", &self.leader_addr)
            .field("manager_addrs", &self.manager_addrs)
            .field("role", &self.role)
            .field("assigned_tasks", &bytes(&self.assigned_tasks))
            .field("gossip", &bytes(&self.gossip))
            .field("routing_mesh", &bytes(&self.routing_mesh))
            .field("routing_mesh_digest", &bytes(&self.routing_mesh_digest))
            .field("manager_ids", &self.manager_ids)
            .field("task_files", &bytes(&self.task_files))
            .field("ca_certs_pem", &self.ca_certs_pem)
            .field("renew_certificate", &self.renew_certificate)
            .finish()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("ca_cert_pem", &self.ca_cert_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &REDACTED_KEY)
            .finish()
    }
}

impl fmt::Debug for AdmitResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdmitResponse")
            .field("cluster_id", &self.cluster_id)
            .field("role", &self.role)
            .field("ca_cert_pem", &self.ca_cert_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &REDACTED_KEY)
            .field("manager_addrs", &self.manager_addrs)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_lengths_never_the_data() {
        let spec = SecretSpec {
            name: "db".into(),
            labels: Vec::new(),
            data: b"hunter2-topsecret".to_vec(),
        };
        let shown = format!("{spec:?}");
        assert!(shown.contains("<17 bytes>"), "{shown}");
        assert!(!shown.contains("104"), "{shown}");
        let reply = HeartbeatResponse {
            task_files: b"hunter2-topsecret".to_vec(),
            ..Default::default()
        };
        let shown = format!("{reply:?}");
        assert!(shown.contains("task_files: \"<17 bytes>\""), "{shown}");
        let key_pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n".to_string();
        let creds = Credentials {
            key_pem: key_pem.clone(),
            ..Default::default()
        };
        let admit = AdmitResponse {
            key_pem,
            ..Default::default()
        };
        for shown in [format!("{creds:?}"), format!("{admit:?}")] {
            assert!(!shown.contains("PRIVATE"), "{shown}");
            assert!(shown.contains("<private key>"), "{shown}");
        }
    }
}
