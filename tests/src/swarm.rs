//! Forming a swarm on a [`Cluster`]: init on the first node, join the rest, wait until every
//! node is Ready.

use std::time::Duration;

use crate::{cluster::Cluster, wait::wait_until};

/// How long a formed swarm may take to show every node Ready with one leader.
const FORM_TIMEOUT: Duration = Duration::from_secs(20);

impl Cluster {
    /// `swarm init` on node 0, then `swarm join` on the others: nodes `1..managers` as
    /// managers, the rest as workers. Returns when `node ls` shows them all Ready.
    pub fn form_swarm(&self, managers: usize) {
        assert!(managers >= 1 && managers <= self.nodes.len());
        let init = self.nodes[0].cli(&["swarm", "init"]);
        assert!(
            init.status.success(),
            "swarm init: {}\n{}",
            String::from_utf8_lossy(&init.stderr),
            self.nodes[0].log_tail()
        );
        let worker = self.join_token(0, "worker");
        let manager = self.join_token(0, "manager");
        let leader_addr = format!("{}:2377", self.nodes[0].address);
        for (i, node) in self.nodes.iter().enumerate().skip(1) {
            let token = if i < managers { &manager } else { &worker };
            let out = node.cli(&["swarm", "join", "--token", token, &leader_addr]);
            assert!(
                out.status.success(),
                "{} join: {}\n{}",
                node.name,
                String::from_utf8_lossy(&out.stderr),
                node.log_tail()
            );
        }
        let expected = self.nodes.len();
        wait_until(FORM_TIMEOUT, "every node Ready with one leader", || {
            let nodes = self.node_ls(0)?;
            let ready = nodes.iter().filter(|n| n["status"] == "ready").count();
            let leaders = nodes
                .iter()
                .filter(|n| n["manager_status"] == "leader")
                .count();
            if nodes.len() == expected && ready == expected && leaders == 1 {
                Ok(())
            } else {
                Err(format!(
                    "{} nodes, {ready} ready, {leaders} leaders",
                    nodes.len()
                ))
            }
        });
    }

    /// `shoal swarm join-token -q ROLE` on node `i`.
    pub fn join_token(&self, i: usize, role: &str) -> String {
        let out = self.nodes[i].cli(&["swarm", "join-token", "-q", role]);
        assert!(out.status.success(), "join-token: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `shoal node ls --format json` on node `i`.
    pub fn node_ls(&self, i: usize) -> Result<Vec<serde_json::Value>, String> {
        let out = self.nodes[i].cli(&["node", "ls", "--format", "json"]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }

    /// The hostname of the current leader, as node `i` sees it.
    pub fn leader(&self, i: usize) -> Result<String, String> {
        let nodes = self.node_ls(i)?;
        nodes
            .iter()
            .find(|n| n["manager_status"] == "leader")
            .and_then(|n| n["hostname"].as_str())
            .map(str::to_string)
            .ok_or_else(|| "no leader".to_string())
    }
}
