//! What a pass may prune (pure): the objects of the last inventory that a plan no longer
//! has, in the order they can be deleted, minus those whose deletion would take objects
//! the plan still declares.
//!
//! Deleting a Namespace deletes everything in it, and deleting a CustomResourceDefinition
//! deletes every object of its kind: a commit that drops only the `Namespace team` manifest
//! while still declaring a Deployment in `team` must not lose the Deployment. Such a
//! Namespace or CRD is kept and reported ([`KeepReason::HoldsDeclared`]), as Flux and
//! Argo CD keep what their safeguards protect. What the cluster holds beyond the plan
//! (objects lockstep did not apply) is the edge's to find; it reports those with the same
//! [`KeepReason`] vocabulary.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::model::ObjectRef;
use crate::plan::{ApplyPlan, Stage, TypeKey};

/// The objects to prune, in deletion order, and those kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneSet {
    /// Namespaced objects and custom resources first, then Namespaces and CRDs (which take
    /// their contents along).
    pub delete: Vec<ObjectRef>,
    /// Namespaces and CRDs that the plan still puts objects in (or of).
    pub kept: Vec<Kept>,
}

/// An object of the prune set left in the cluster, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    pub object: ObjectRef,
    pub reason: KeepReason,
}

/// Why a dropped object was not deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeepReason {
    /// It does not carry this sync's annotation (someone else applied or took it over).
    NotOurs,
    /// A Namespace or CRD that objects the commit still declares live in (or are of).
    HoldsDeclared { declared: Vec<ObjectRef> },
    /// A Namespace holding objects this sync did not apply.
    HoldsForeign { found: Vec<ObjectRef> },
    /// A Namespace whose contents could not be checked (the list was refused, say).
    Unchecked { why: String },
}

impl KeepReason {
    /// The CamelCase word for the status and logs.
    pub fn code(&self) -> &'static str {
        match self {
            KeepReason::NotOurs => "NotOurs",
            KeepReason::HoldsDeclared { .. } => "HoldsDeclaredObjects",
            KeepReason::HoldsForeign { .. } => "HoldsForeignObjects",
            KeepReason::Unchecked { .. } => "ContentsUnchecked",
        }
    }
}

/// How many objects a reason names before "and N more".
const NAMED: usize = 3;

fn names(objects: &[ObjectRef]) -> String {
    let mut shown: Vec<String> = objects.iter().take(NAMED).map(|o| o.to_string()).collect();
    if objects.len() > NAMED {
        shown.push(format!("and {} more", objects.len() - NAMED));
    }
    shown.join(", ")
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepReason::NotOurs => f.write_str("not applied by this LockstepSync"),
            KeepReason::HoldsDeclared { declared } => write!(
                f,
                "the commit still declares {} object(s) in it: {}",
                declared.len(),
                names(declared)
            ),
            KeepReason::HoldsForeign { found } => write!(
                f,
                "it holds objects this LockstepSync did not apply: {}",
                names(found)
            ),
            KeepReason::Unchecked { why } => {
                write!(f, "its contents could not be checked ({why})")
            }
        }
    }
}

/// The name of the CRD defining `type_key`'s kind, given its plural (`<plural>.<group>`);
/// core kinds (no group) have none.
pub fn crd_name(type_key: &TypeKey, plural: &str) -> Option<String> {
    let (group, _version) = type_key.api_version.split_once('/')?;
    Some(format!("{plural}.{group}"))
}

impl ApplyPlan {
    /// What `previous` (the last inventory) holds and this plan does not, in deletion
    /// order; a Namespace the plan still puts objects in, or a CRD whose kind it still has
    /// objects of, is kept. `crd_of` names the CRD defining a kind (from discovery), `None`
    /// for built-in kinds.
    pub fn prune_set(
        &self,
        previous: &[ObjectRef],
        crd_of: impl Fn(&TypeKey) -> Option<String>,
    ) -> PruneSet {
        let mut by_namespace: BTreeMap<&str, Vec<ObjectRef>> = BTreeMap::new();
        let mut by_crd: BTreeMap<String, Vec<ObjectRef>> = BTreeMap::new();
        for object in self.objects() {
            let key = object.key();
            if !key.namespace.is_empty() {
                by_namespace
                    .entry(key.namespace.as_str())
                    .or_default()
                    .push(key.clone());
            }
            let type_key = TypeKey {
                api_version: key.api_version.clone(),
                kind: key.kind.clone(),
            };
            if let Some(crd) = crd_of(&type_key) {
                by_crd.entry(crd).or_default().push(key.clone());
            }
        }
        let current: BTreeSet<&ObjectRef> = self.objects().iter().map(|o| o.key()).collect();
        let mut gone: Vec<ObjectRef> = previous
            .iter()
            .filter(|o| !current.contains(o))
            .cloned()
            .collect();
        // Stable: the inventory's order within each stage.
        gone.sort_by_key(|o| std::cmp::Reverse(Stage::of(&o.api_version, &o.kind)));
        gone.dedup();
        let mut set = PruneSet::default();
        for object in gone {
            let holds = match (object.api_version.as_str(), object.kind.as_str()) {
                ("v1", "Namespace") => by_namespace.get(object.name.as_str()),
                (api, "CustomResourceDefinition") if api.starts_with("apiextensions.k8s.io/") => {
                    by_crd.get(&object.name)
                }
                _ => None,
            };
            match holds {
                Some(declared) => set.kept.push(Kept {
                    object,
                    reason: KeepReason::HoldsDeclared {
                        declared: declared.clone(),
                    },
                }),
                None => set.delete.push(object),
            }
        }
        set
    }
}
