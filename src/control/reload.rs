//! Reload: zones.yaml, its policies and register maps read, validated, compiled and tested
//! again, then put in force as one step: the ruleset in one nftables transaction, and the new
//! site handed to the proxies, whose sessions judge their next request by it. Any failure
//! before that leaves the old state in force.

use std::sync::Arc;

use crate::nft::{self, NftError, Ruleset};
use crate::quarantine::Quarantine;
use crate::site::{Site, SiteError};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Site(#[from] SiteError),
    #[error("{0} cannot change on reload; restart zonegate to change it")]
    NeedsRestart(&'static str),
    #[error("the new ruleset was not applied: {0}")]
    Nft(#[from] NftError),
    #[error("the reload did not finish: {0}")]
    Aborted(String),
}

/// A site ready to take over: its ruleset is already in the kernel.
#[derive(Debug)]
pub struct Applied {
    pub site: Arc<Site>,
    pub ruleset: Ruleset,
}

/// Everything before the swap, blocking (compiling policies, running their tests, `nft`): the
/// new site from `current`'s file, checked against what only a restart can change, and its
/// ruleset applied in one transaction (which the kernel takes whole or not at all), with the
/// sources `quarantine` still holds (those the new file still quarantines).
pub fn load_and_apply(current: &Site, quarantine: &Quarantine) -> Result<Applied, ReloadError> {
    let site = Site::load(&current.path)?;
    site.test_policies()?;
    needs_restart(&current.model, &site.model)?;
    let ruleset = nft::render(&site.model);
    quarantine.apply(&ruleset, Some(&site.model))?;
    Ok(Applied {
        site: Arc::new(site),
        ruleset,
    })
}

/// Settings bound at start-up: listening sockets, the drop log's netlink group, the audit
/// sinks. Changing them by reload would leave the daemon running something else than its
/// file says.
fn needs_restart(
    old: &crate::config::Model,
    new: &crate::config::Model,
) -> Result<(), ReloadError> {
    if old.gateway.modbus_proxy_port != new.gateway.modbus_proxy_port
        || old.gateway.opcua_proxy_port != new.gateway.opcua_proxy_port
    {
        return Err(ReloadError::NeedsRestart("gateway.proxy"));
    }
    if old.gateway.drop_log_group != new.gateway.drop_log_group {
        return Err(ReloadError::NeedsRestart("gateway.drop_log.group"));
    }
    if old.audit != new.audit {
        return Err(ReloadError::NeedsRestart("audit"));
    }
    // The connection counts are bound by the listeners at start-up; timeouts, the in-flight
    // bound, policy time and write rates follow a reload with each connection's route.
    if old.limits.connections != new.limits.connections
        || old.limits.connections_per_source != new.limits.connections_per_source
    {
        return Err(ReloadError::NeedsRestart(
            "limits.connections, limits.connections_per_source",
        ));
    }
    Ok(())
}
