//! A site: the validated model together with what it names on disk, compiled and checked: one
//! policy per inspected conduit (compiled once per file) and one register map per device that has
//! one. What `check` validates and what `run` enforces are the same object.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::admission::{Protocol, TokenBucket};
use crate::config::{self, Conduit, ConfigError, Model, Service};
use crate::policy::registers::RegisterMap;
use crate::policy::{Policy, PolicyError};

#[derive(Debug)]
pub struct Site {
    pub model: Model,
    pub path: PathBuf,
    /// By conduit: the policy for Modbus requests.
    policies: HashMap<String, Arc<Policy>>,
    /// By conduit: the policy for OPC UA channels and requests.
    opcua_policies: HashMap<String, Arc<Policy>>,
    maps: HashMap<String, Arc<RegisterMap>>,
    /// By conduit: its `inspection.write_rate` bucket, shared by its connections (a reload
    /// starts it full again).
    write_rates: HashMap<String, Arc<TokenBucket>>,
}

/// See [`Site::fingerprint`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint {
    pub file: String,
    pub sha256: String,
    /// Policies and register maps: path -> hex SHA-256.
    pub files: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("conduit `{conduit}`: policy {}: {source}", path.display())]
    Policy {
        conduit: String,
        path: PathBuf,
        #[source]
        source: Box<PolicyError>,
    },
    #[error("policy {}: its tests fail ({}): {}", policy.display(), summary, failures.join("; "))]
    PolicyTests {
        policy: PathBuf,
        summary: String,
        failures: Vec<String>,
    },
    #[error("audit.checkpoint.signing_key_file: {0}")]
    SigningKey(#[source] crate::audit::checkpoint::CheckpointError),
    #[error("asset `{asset}`: register map {}: {source}", path.display())]
    RegisterMap {
        asset: String,
        path: PathBuf,
        #[source]
        source: Box<PolicyError>,
    },
}

impl Site {
    /// zones.yaml and what it names, for `check`, `run` and reload: every file it names must be
    /// readable (a file that is not is reported at its line and column).
    pub fn load(path: &Path) -> Result<Site, SiteError> {
        Site::with_model(path, config::load_with_files(path)?)
    }

    /// For reports on the configuration (`compliance`), which may be made where its keys and
    /// certificates are not: only the policies and register maps are read.
    pub fn load_for_report(path: &Path) -> Result<Site, SiteError> {
        Site::with_model(path, config::load(path)?)
    }

    fn with_model(path: &Path, model: Model) -> Result<Site, SiteError> {
        let policy_time = model.limits.policy_time;
        let mut by_file: HashMap<PathBuf, Arc<Policy>> = HashMap::new();
        let mut load = |conduit: &str, path: &PathBuf| -> Result<Arc<Policy>, SiteError> {
            if let Some(p) = by_file.get(path) {
                return Ok(p.clone());
            }
            let p = Arc::new(Policy::load_with_time(path, policy_time).map_err(|source| {
                SiteError::Policy {
                    conduit: conduit.to_owned(),
                    path: path.clone(),
                    source: Box::new(source),
                }
            })?);
            by_file.insert(path.clone(), p.clone());
            Ok(p)
        };
        let mut policies = HashMap::new();
        let mut opcua_policies = HashMap::new();
        for c in &model.conduits {
            let Some(inspection) = &c.inspection else {
                continue;
            };
            let policy = load(&c.name, &inspection.policy)?;
            let opcua = match &inspection.opcua_policy {
                Some(path) => load(&c.name, path)?,
                None => policy.clone(),
            };
            policies.insert(c.name.clone(), policy);
            opcua_policies.insert(c.name.clone(), opcua);
        }
        let mut maps = HashMap::new();
        for a in &model.assets {
            let Some(map_path) = &a.register_map else {
                continue;
            };
            let map = RegisterMap::load(map_path).map_err(|source| SiteError::RegisterMap {
                asset: a.name.clone(),
                path: map_path.clone(),
                source: Box::new(source),
            })?;
            maps.insert(a.name.clone(), Arc::new(map));
        }
        // Read now, so that `check` and a reload refuse a key the daemon could not sign with.
        if let Some(c) = &model.audit.checkpoint {
            crate::audit::checkpoint::load_signing_key(&c.signing_key_file)
                .map_err(SiteError::SigningKey)?;
        }
        let write_rates = model
            .conduits
            .iter()
            .filter_map(|c| {
                let rate = c.inspection.as_ref()?.write_rate?;
                Some((c.name.clone(), Arc::new(TokenBucket::new(rate))))
            })
            .collect();
        Ok(Site {
            model,
            path: path.to_owned(),
            policies,
            opcua_policies,
            maps,
            write_rates,
        })
    }

    /// What the site was loaded from, by content: the hex SHA-256 of zones.yaml and of every
    /// policy and register map it names (file -> hash). Audit events name configuration
    /// changes by these.
    pub fn fingerprint(&self) -> Fingerprint {
        let hash = |p: &Path| {
            std::fs::read(p)
                .map(|b| crate::policy::revision(&b))
                .unwrap_or_default()
        };
        let mut files = std::collections::BTreeMap::new();
        let mut policies: Vec<&Arc<Policy>> = self
            .policies
            .values()
            .chain(self.opcua_policies.values())
            .collect();
        policies.sort_by(|a, b| a.name().cmp(b.name()));
        policies.dedup_by(|a, b| a.name() == b.name());
        for p in policies {
            files.insert(p.name().to_owned(), p.revision().to_owned());
        }
        for a in &self.model.assets {
            if let Some(m) = &a.register_map {
                files.insert(m.display().to_string(), hash(m));
            }
        }
        Fingerprint {
            file: self.path.display().to_string(),
            sha256: hash(&self.path),
            files,
        }
    }

    /// Runs the tests that come with each policy: `NAME_test.rego` beside `NAME.rego`. A policy
    /// whose own tests fail is not put in force, at start or on reload. Policies without a test
    /// file pass (`zonegate check` warns about them).
    pub fn test_policies(&self) -> Result<(), SiteError> {
        for (policy, tests) in self.policy_tests() {
            let run = crate::policy::run_tests(&[policy.clone(), tests]);
            if !run.success() {
                let failures = run
                    .errors
                    .iter()
                    .map(ToString::to_string)
                    .chain(
                        run.results
                            .iter()
                            .filter(|r| r.outcome != crate::policy::TestOutcome::Pass)
                            .map(ToString::to_string),
                    )
                    .collect();
                return Err(SiteError::PolicyTests {
                    policy,
                    summary: run.summary(),
                    failures,
                });
            }
        }
        Ok(())
    }

    /// Each policy file in use with its test file, when it has one.
    fn policy_tests(&self) -> Vec<(PathBuf, PathBuf)> {
        let mut files: Vec<PathBuf> = self
            .policies
            .values()
            .chain(self.opcua_policies.values())
            .map(|p| PathBuf::from(p.name()))
            .collect();
        files.sort();
        files.dedup();
        files
            .into_iter()
            .filter_map(|p| {
                let stem = p.file_stem()?.to_str()?;
                let tests = p.with_file_name(format!("{stem}_test.rego"));
                tests.is_file().then_some((p, tests))
            })
            .collect()
    }

    /// The policy that judges the conduit's Modbus requests.
    pub fn policy(&self, conduit: &str) -> Option<&Arc<Policy>> {
        self.policies.get(conduit)
    }

    /// The policy that judges the conduit's OPC UA channels and requests.
    pub fn opcua_policy(&self, conduit: &str) -> Option<&Arc<Policy>> {
        self.opcua_policies.get(conduit)
    }

    /// The conduit's write rate bucket, if it has `inspection.write_rate`.
    pub fn write_rate(&self, conduit: &str) -> Option<&Arc<TokenBucket>> {
        self.write_rates.get(conduit)
    }

    pub fn register_map(&self, asset: &str) -> Option<&Arc<RegisterMap>> {
        self.maps.get(asset)
    }

    /// True when some conduit needs the deep-inspection proxy.
    pub fn has_inspected_conduits(&self) -> bool {
        self.model.conduits.iter().any(|c| c.inspection.is_some())
    }

    /// True when some conduit carries `protocol` to the proxy.
    pub fn inspects(&self, protocol: Protocol) -> bool {
        self.model
            .conduits
            .iter()
            .flat_map(|c| &c.services)
            .any(|s| {
                matches!(
                    (s, protocol),
                    (Service::Modbus { .. }, Protocol::Modbus)
                        | (Service::OpcUa { .. }, Protocol::OpcUa)
                )
            })
    }

    /// The conduit a diverted Modbus connection travels on: the one whose `modbus` service port,
    /// source side and destination side all hold it. The kernel only diverts such connections; this is
    /// the proxy's own check of the same thing.
    pub fn modbus_conduit(&self, client: IpAddr, device: SocketAddr) -> Option<&Conduit> {
        self.inspected_conduit(
            client,
            device,
            |s| matches!(s, Service::Modbus { port } if *port == device.port()),
        )
    }

    /// The same for an `opcua` service.
    pub fn opcua_conduit(&self, client: IpAddr, device: SocketAddr) -> Option<&Conduit> {
        self.inspected_conduit(
            client,
            device,
            |s| matches!(s, Service::OpcUa { port } if *port == device.port()),
        )
    }

    fn inspected_conduit(
        &self,
        client: IpAddr,
        device: SocketAddr,
        service: impl Fn(&Service) -> bool,
    ) -> Option<&Conduit> {
        let from = self.model.zone_of(client)?;
        let to = self.model.zone_of(device.ip())?;
        self.model.conduits.iter().find(|c| {
            c.from == from.name
                && c.to == to.name
                && c.services.iter().any(&service)
                && (c.sources.is_empty() || c.sources.iter().any(|e| e.net().contains(&client)))
                && (c.destinations.is_empty()
                    || c.destinations
                        .iter()
                        .any(|e| e.net().contains(&device.ip())))
        })
    }
}
