//! The running daemon's control loop: apply, then keep the kernel's ruleset what zones.yaml says
//! until told to stop. Signals, reload and sd_notify live here as they arrive.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use std::sync::Arc;

use crate::audit::{Audit, Sink};
use crate::nft::{self, NftError};
use crate::proxy::{self, Protocol, Proxy, ProxyError};
use crate::site::Site;

/// How often the ruleset in the kernel is compared with the one applied. Someone running
/// `nft flush ruleset` on a gateway would otherwise open every zone to every other until restart.
pub const VERIFY_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Nft(#[from] NftError),
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error("cannot open the audit log: {0}")]
    Audit(#[source] std::io::Error),
}

/// Applies the site's ruleset, serves its inspected conduits, and enforces both until SIGTERM or
/// SIGINT. The ruleset stays in the kernel afterwards: stopping zonegate must not open the plant
/// (inspected conduits then carry nothing).
pub async fn run(site: Site, audit_sink: Sink) -> Result<(), ControlError> {
    let site = Arc::new(site);
    let model = &site.model;
    let audit = Audit::start(audit_sink).map_err(ControlError::Audit)?;
    // The proxy listens before the ruleset diverts anything to it, so no diverted connection
    // meets a closed port.
    let mut proxy_task = None;
    if site.has_inspected_conduits() {
        proxy::routing::install().map_err(ProxyError::from)?;
        let limit = proxy::connection_limit();
        let mut proxies = tokio::task::JoinSet::new();
        for (protocol, port) in [
            (Protocol::Modbus, model.gateway.modbus_proxy_port),
            (Protocol::OpcUa, model.gateway.opcua_proxy_port),
        ] {
            if !site.inspects(protocol) {
                continue;
            }
            let proxy = Proxy::bind(protocol, port)?;
            proxies.spawn(proxy.serve(site.clone(), audit.clone(), limit.clone()));
        }
        proxy_task = Some(proxies);
    }
    let ruleset = nft::render(model);
    nft::apply(&ruleset)?;
    tracing::info!(
        zones = model.zones.len(),
        conduits = model.conduits.len(),
        "enforcing"
    );
    let mut term = signal(SignalKind::terminate()).map_err(ControlError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ControlError::Signals)?;
    let mut tick = tokio::time::interval(VERIFY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {
                if let Err(drift) = nft::verify(&ruleset) {
                    tracing::warn!(%drift, "the kernel's ruleset changed behind zonegate's back; applying it again");
                    if let Err(e) = nft::apply(&ruleset) {
                        tracing::error!(error = %e, "cannot restore the ruleset");
                    } else {
                        tracing::info!("ruleset restored");
                    }
                }
            }
        }
    }
    if let Some(mut proxies) = proxy_task {
        proxies.abort_all();
    }
    tracing::info!("stopping; the ruleset stays in force");
    Ok(())
}
