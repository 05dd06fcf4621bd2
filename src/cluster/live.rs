//! The applied inventory as it is now: each object read back and judged, so that health is
//! re-judged on every pass — one that refuses a new commit too — and not only when applying.

use std::collections::BTreeSet;

use super::apply::{ApplyError, Cluster};
use super::health::{Health, HealthSummary, health_of};
use super::plan::TypeKey;
use crate::model::ObjectRef;

impl Cluster {
    /// The health of each object of `inventory`, read from the API server. An object that
    /// is gone (or whose kind is no longer served) has failed: the commit still declares it.
    pub async fn health(&self, inventory: &[ObjectRef]) -> Result<HealthSummary, ApplyError> {
        let type_key = |o: &ObjectRef| TypeKey {
            api_version: o.api_version.clone(),
            kind: o.kind.clone(),
        };
        let kinds: BTreeSet<TypeKey> = inventory.iter().map(type_key).collect();
        let discovered = self.discover(&kinds).await?;
        let mut verdicts = Vec::with_capacity(inventory.len());
        for object in inventory {
            let gone = || Health::Failed("not in the cluster: deleted since it was applied".into());
            let Some((resource, scope)) = discovered.get(&type_key(object)) else {
                verdicts.push((object.clone(), gone()));
                continue;
            };
            let api = self.api_for(resource, *scope, &object.namespace);
            let live = api
                .get_opt(&object.name)
                .await
                .map_err(|source| ApplyError::Read {
                    object: object.to_string(),
                    source,
                })?;
            let health = match live {
                Some(live) => health_of(&serde_json::to_value(&live).unwrap_or_default()),
                None => gone(),
            };
            verdicts.push((object.clone(), health));
        }
        Ok(HealthSummary::of(verdicts))
    }
}
