//! A node's certificate over time, as swarmkit's `TLSRenewer` keeps it: renewed over 2377 with
//! the current certificate at a random point between 50 % and 80 % of its lifetime, at once
//! when a root rotation asks for it (the heartbeat answer says so), and the swarm's roots
//! followed as the leader names them. A new certificate is saved, then used for every new
//! connection in and out ([`crate::pki::LiveTls`]), with no restart and no lost heartbeat; its
//! key signs the node's network DB entries a few heartbeats later, once every node has heard
//! of it from the managers.
//!
//! A certificate that expired while the node was off cannot be renewed (no manager takes it):
//! a manager issues itself a new one from the CA in its store (`reissue`, also when its
//! renewals find no leader before it runs out), then has the leader issue and record one; a
//! worker says so in one line and waits for `swarm leave --force` and a new join.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

use crate::{
    api::RenewCertificateRequest,
    clock::now_ms,
    error_chain::Chain,
    pki::{self, NodeCredentials},
    swarm::{Active, Swarm, error::Error, leader::Leader, persist},
};

/// Heartbeat periods after which a key handed to the managers has reached every live node:
/// a node beats once a period and the answer carries every node's key.
const KEY_SPREAD_PERIODS: u32 = 2;
/// Heartbeat periods within which a rotation's "renew now" is taken for the certificate just
/// installed (the answer raced the report of the new one).
const RENEWED_RECENTLY_PERIODS: u32 = 3;
/// First wait after a failed renewal; doubled on each failure up to [`RETRY_AT_MOST`].
const RETRY_FIRST: Duration = Duration::from_secs(2);
const RETRY_AT_MOST: Duration = Duration::from_secs(60);
/// Never sooner than this after a failure, however little time is left.
const RETRY_LEAST: Duration = Duration::from_millis(500);
/// A manager whose renewals keep failing issues itself a certificate (`reissue`) once less
/// than this share (1/N) of its lifetime is left.
const SELF_ISSUE_WITHIN: u64 = 10;

/// What the heartbeat tells the renewal loop.
pub(in crate::swarm) struct CertWatch {
    wake: Notify,
    /// A root rotation asks for a certificate of the new CA.
    renew_asked: AtomicBool,
    /// The roots the leader named last, when they were not ours.
    roots: Mutex<Option<String>>,
    /// When the current certificate was installed.
    installed_at: Mutex<Instant>,
    /// The heartbeat period, as the leader last said.
    period: Mutex<Duration>,
}

impl CertWatch {
    pub(in crate::swarm) fn new(period: Duration) -> Self {
        CertWatch {
            wake: Notify::new(),
            renew_asked: AtomicBool::new(false),
            roots: Mutex::new(None),
            installed_at: Mutex::new(Instant::now()),
            period: Mutex::new(period),
        }
    }

    /// What a heartbeat answer said: the roots every node trusts (`roots`, PEM; empty from a
    /// leader that sends none) and whether this node must renew for a root rotation.
    pub(in crate::swarm) fn follow(
        &self,
        ours: &NodeCredentials,
        roots: &str,
        renew: bool,
        period: Duration,
    ) {
        *self.period.lock().unwrap_or_else(PoisonError::into_inner) = period;
        let mut wake = false;
        if !roots.is_empty() && roots != ours.ca_cert_pem {
            *self.roots.lock().unwrap_or_else(PoisonError::into_inner) = Some(roots.to_string());
            wake = true;
        }
        let installed = *self
            .installed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if renew && installed.elapsed() > period * RENEWED_RECENTLY_PERIODS {
            self.renew_asked.store(true, Ordering::Relaxed);
            wake = true;
        }
        if wake {
            self.wake.notify_one();
        }
    }

    fn period(&self) -> Duration {
        *self.period.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The renewal loop of a membership, until `stop`. Boxed: it may end in a role switch.
pub(in crate::swarm) fn run(
    swarm: Swarm,
    active: Arc<Active>,
    stop: watch::Receiver<bool>,
) -> BoxFuture<'static, ()> {
    Box::pin(renew_over_time(swarm, active, stop))
}

async fn renew_over_time(swarm: Swarm, active: Arc<Active>, mut stop: watch::Receiver<bool>) {
    let mut share = pki::random_renewal_share();
    let mut failures: u32 = 0;
    loop {
        let cert = active.tls.current().cert.clone();
        let now = now_ms() as f64 / 1000.0;
        if cert.not_after as f64 <= now {
            // Renewing needs a valid certificate: no manager takes this one any more. A
            // manager issues itself one from the CA in its store.
            if swarm.reissue_running(&active).await {
                failures = 0;
                continue;
            }
            error!("{}", expired(cert.not_after));
            return;
        }
        // A manager using a certificate its store does not record (one it issued itself)
        // asks the leader for one soon, which the leader records.
        let unrecorded = || {
            let installed = *active
                .certs
                .installed_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let settle = active.certs.period() * RENEWED_RECENTLY_PERIODS;
            swarm.unrecorded_for(&active, installed.elapsed(), settle)
        };
        let wait = match failures {
            0 => pki::renewal_delay(cert.not_before, cert.not_after, now, share),
            // Backing off, but trying a few more times before the certificate runs out.
            n => {
                let left =
                    Duration::try_from_secs_f64(cert.not_after as f64 - now).unwrap_or_default();
                RETRY_FIRST
                    .saturating_mul(1 << (n - 1).min(10))
                    .min(RETRY_AT_MOST)
                    .min(left / 4)
                    .max(RETRY_LEAST)
            }
        };
        let record_in = unrecorded().filter(|d| failures == 0 && *d < wait);
        let mut renew = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(record_in.unwrap_or(wait)) => true,
            () = active.certs.wake.notified() => false,
        };
        if renew && record_in.is_some() {
            // Woken to have the certificate recorded: unless the store caught up meanwhile.
            renew = unrecorded().is_some_and(|d| d.is_zero());
        }
        renew |= active.certs.renew_asked.swap(false, Ordering::Relaxed);
        let roots = active
            .certs
            .roots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(roots) = roots {
            match swarm.follow_roots(&active, roots).await {
                Ok(need_new_cert) => renew |= need_new_cert,
                Err(e) => warn!(cause = %Chain(&e), "cannot take the swarm's new roots"),
            }
        }
        if !renew {
            continue;
        }
        match swarm.renew_certificate(&active).await {
            Ok(()) => {
                failures = 0;
                share = pki::random_renewal_share();
            }
            Err(e) => {
                failures += 1;
                warn!(cause = %Chain(&e), failures, "certificate renewal failed; retrying");
                // No leader before the certificate runs out: a manager issues itself one.
                let cert = active.tls.current().cert.clone();
                let lifetime = cert.not_after.saturating_sub(cert.not_before);
                let left = cert.not_after.saturating_sub(crate::clock::now_secs());
                if left <= (lifetime / SELF_ISSUE_WITHIN).max(1)
                    && swarm.reissue_running(&active).await
                {
                    failures = 0;
                    share = pki::random_renewal_share();
                }
            }
        }
    }
}

/// The one line an expired certificate gets.
fn expired(not_after: u64) -> Error {
    Error::CertificateExpired {
        expired_on: pki::time_text(not_after),
    }
}

impl Swarm {
    /// A new certificate (and key) from the leader, put to use.
    async fn renew_certificate(&self, active: &Arc<Active>) -> Result<(), Error> {
        let creds = self.renew_credentials(active).await?;
        self.install_credentials(active, creds).await
    }

    /// A new certificate for this node's current role, from the leader: asked over 2377 with
    /// the current certificate, or issued here when this node leads.
    pub(in crate::swarm) async fn renew_credentials(
        &self,
        active: &Arc<Active>,
    ) -> Result<NodeCredentials, Error> {
        let request = RenewCertificateRequest {
            node_id: self.node_id().to_string(),
        };
        if let Some(leader) = Leader::of(self, active) {
            let reply = leader.renew_certificate(request).await?;
            return Ok(NodeCredentials {
                ca_cert_pem: reply.ca_cert_pem,
                cert_pem: reply.cert_pem,
                key_pem: reply.key_pem,
            });
        }
        let mut last = Error::unavailable("no manager answered");
        for addr in active.managers_leader_first() {
            match active
                .peers
                .client(addr)?
                .renew_certificate(request.clone())
                .await
            {
                Ok(reply) => {
                    let reply = reply.into_inner();
                    return Ok(NodeCredentials {
                        ca_cert_pem: reply.ca_cert_pem,
                        cert_pem: reply.cert_pem,
                        key_pem: reply.key_pem,
                    });
                }
                Err(e) => last = e.into(),
            }
        }
        Err(last)
    }

    /// Takes the roots the leader names (a root rotation started or ended), if this node's
    /// certificate leads to them; otherwise keeps its own and says a new certificate is needed
    /// first (it comes with the roots).
    async fn follow_roots(&self, active: &Arc<Active>, roots: String) -> Result<bool, Error> {
        let ours = active.tls.creds();
        if roots == ours.ca_cert_pem {
            return Ok(false);
        }
        if pki::verify_chain(&ours.cert_pem, &roots).is_err() {
            return Ok(true);
        }
        self.install_credentials(
            active,
            NodeCredentials {
                ca_cert_pem: roots,
                ..ours
            },
        )
        .await?;
        info!("trusting the swarm's new root CAs");
        Ok(false)
    }

    /// Checks `creds` (this node's, leading to their roots), saves them (the key sealed under
    /// autolock), and uses them for every new connection; a new key signs the network DB's
    /// entries once the managers have had time to tell every node of it.
    pub(in crate::swarm) async fn install_credentials(
        &self,
        active: &Arc<Active>,
        creds: NodeCredentials,
    ) -> Result<(), Error> {
        let cert =
            pki::cert_info(&creds.cert_pem).map_err(Error::pki("reading the certificate"))?;
        let leaf =
            pki::identity_of(&creds.cert_pem).map_err(Error::pki("reading the certificate"))?;
        if leaf.node_id != self.node_id() {
            return Err(Error::denied(format!(
                "the managers sent a certificate for node {}",
                leaf.node_id
            )));
        }
        pki::verify_chain(&creds.cert_pem, &creds.ca_cert_pem)
            .map_err(Error::pki("checking the certificate against its roots"))?;
        let new_key = creds.key_pem != active.tls.current().creds.key_pem;
        let set = active
            .tls
            .prepare(creds)
            .map_err(Error::pki("building the TLS configuration"))?;
        {
            // Not while the membership changes (a role switch or a re-seal saves credentials).
            let _guard = self.inner.transitions.lock().await;
            if *active.stop.borrow() {
                return Err(Error::unavailable("the membership changed meanwhile"));
            }
            let seal = active
                .at_rest
                .as_ref()
                .filter(|at_rest| at_rest.is_sealed())
                .map(|at_rest| &at_rest.dek);
            set.creds
                .save_sealed(&persist::swarm_dir(&self.inner.config.state_dir), seal)
                .map_err(Error::pki("saving the node credentials"))?;
            active.tls.install(Arc::clone(&set));
        }
        active.peers.reset();
        *active
            .certs
            .installed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        if new_key {
            info!(serial = %cert.serial, expires = %pki::time_text(cert.not_after),
                "node certificate renewed");
            self.hand_key_over_later(active, set.creds.key_pem.clone());
        }
        Ok(())
    }

    /// Gives the network DB the new key once every live node has had a heartbeat answer
    /// carrying its public key (records signed with it before would be dropped as forged by
    /// nodes that do not know it yet), unless the membership or the key changed meanwhile.
    fn hand_key_over_later(&self, active: &Arc<Active>, key_pem: String) {
        let runner = Arc::clone(&self.inner.runner);
        let active = Arc::clone(active);
        let delay = active.certs.period() * KEY_SPREAD_PERIODS + Duration::from_millis(500);
        let mut stop = active.stop.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = tokio::time::sleep(delay) => {}
            }
            if active.tls.current().creds.key_pem == key_pem {
                runner.node_key(&key_pem);
            }
        });
    }

    /// After a restart: refuses credentials whose certificate expired while the node was off,
    /// remembering when, and says so in one line (logged, and the answer to every call).
    pub(in crate::swarm) fn check_not_expired(&self, creds: &NodeCredentials) -> Result<(), Error> {
        let cert =
            pki::cert_info(&creds.cert_pem).map_err(Error::pki("reading the certificate"))?;
        if cert.not_after > crate::clock::now_secs() {
            return Ok(());
        }
        let err = expired(cert.not_after);
        error!("{err}");
        *self.expired_slot() = Some(pki::time_text(cert.not_after));
        Err(err)
    }

    /// When the certificate of a membership that could not resume expired, if it did.
    pub(in crate::swarm) fn expired(&self) -> Option<String> {
        self.expired_slot().clone()
    }

    fn expired_slot(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.inner
            .expired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// `swarm leave` on a node whose certificate expired: only with `force`, which forgets the
    /// membership. `Ok(false)`: the node is not in that state.
    pub(in crate::swarm) fn leave_expired(&self, force: bool) -> Result<bool, Error> {
        let Some(expired_on) = self.expired() else {
            return Ok(false);
        };
        if !force {
            return Err(Error::CertificateExpired { expired_on });
        }
        persist::remove(&self.inner.config.state_dir)
            .map_err(Error::internal("removing the swarm membership files"))?;
        *self.expired_slot() = None;
        Ok(true)
    }
}
