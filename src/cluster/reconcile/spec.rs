//! The first stage of a pass: the spec, checked, and what it names in the cluster — the
//! trusted signers (a ConfigMap or Secret of the sync's namespace) and the Git credentials.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt as _};
use serde::de::DeserializeOwned;

use super::outcome::{FailedStep, Refusal};
use crate::cluster::crd::{LockstepSync, Revision, TrustKind, TrustRef};
use crate::cluster::kube_error::describe;
use crate::mirror::MirrorTarget;
use crate::signing::AllowedSigners;
use crate::source::git::{self, GitCredentials, HttpCredentials, SshCredentials};

/// The spec, checked, with what it names read from the cluster.
pub(super) struct Inputs {
    pub revision: Revision,
    pub mirror: Option<MirrorTarget>,
    pub trust: AllowedSigners,
    /// `spec.promotion.trust` (or `spec.trust`) when the spec requires a promotion.
    pub promotion_trust: Option<AllowedSigners>,
    /// `spec.provenance`: the cluster's own cosign keys, as a rule.
    pub provenance: Option<crate::provenance::ProvenanceRule>,
    pub credentials: Option<GitCredentials>,
}

/// Check the spec (refused `InvalidSpec`), then read the trust and the Git credentials.
pub(super) async fn read_inputs(client: &Client, sync: &LockstepSync) -> Result<Inputs, Refusal> {
    let spec = &sync.spec;
    let invalid = |message: String| Refusal::new(FailedStep::Spec, "InvalidSpec", message);
    let revision = spec
        .git_ref
        .revision()
        .map_err(|e| invalid(e.to_string()))?;
    if spec.threshold == 0 {
        return Err(invalid("spec.threshold must be at least 1".into()));
    }
    let mirror = spec
        .mirror
        .as_deref()
        .map(MirrorTarget::parse)
        .transpose()
        .map_err(|e| invalid(format!("spec.mirror: {e}")))?;
    if let Some(promotion) = &spec.promotion {
        if promotion.threshold == 0 {
            return Err(invalid(
                "spec.promotion.threshold must be at least 1".into(),
            ));
        }
        if promotion.from.is_empty() {
            return Err(invalid("spec.promotion.from names no environment".into()));
        }
    }
    check_sources_allowed(client, &sync.namespace().unwrap_or_default()).await?;
    let trust = read_trust(client, sync, &spec.trust).await?;
    let promotion_trust = match spec.promotion.as_ref().map(|p| p.trust.as_ref()) {
        None => None,
        Some(None) => Some(trust.clone()),
        Some(Some(other)) => Some(read_trust(client, sync, other).await?),
    };
    let provenance = match &spec.provenance {
        Some(wanted) => Some(read_provenance(client, sync, wanted).await?),
        None => None,
    };
    Ok(Inputs {
        revision,
        mirror,
        trust,
        promotion_trust,
        provenance,
        credentials: read_credentials(client, sync).await?,
    })
}

/// The permission a RoleBinding of `lockstep-sources` grants in a namespace: no API serves
/// it; the controller asks for it before it reads a namespace's trust or credentials.
pub const SOURCES_PERMISSION: (&str, &str, &str) = ("lockstep.dev", "sources", "get");

/// Refuse (`Forbidden`) a namespace where no RoleBinding lets the controller read sources.
/// Asked of the API server (a SelfSubjectAccessReview), because reading the object itself
/// proves nothing: the applier role may read every ConfigMap in the cluster, and the
/// promise is that only a RoleBinding opts a namespace in, for ConfigMaps and Secrets alike.
async fn check_sources_allowed(client: &Client, namespace: &str) -> Result<(), Refusal> {
    let (group, resource, verb) = SOURCES_PERMISSION;
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.into()),
                resource: Some(resource.into()),
                verb: Some(verb.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let what = format!("cannot ask whether namespace {namespace} opted in");
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| Refusal::of_kube(FailedStep::Trust, what, &e))?;
    if answer.status.is_some_and(|s| s.allowed) {
        return Ok(());
    }
    Err(Refusal::new(
        FailedStep::Trust,
        "Forbidden",
        format!(
            "namespace {namespace} has not opted in: the controller reads a LockstepSync's trust and credentials only where a RoleBinding of the ClusterRole lockstep-sources grants its ServiceAccount `{verb}` on `{resource}.{group}` (see deploy/rbac.yaml)"
        ),
    ))
}

/// Read the allowed_signers text `trust` names, from the sync's namespace.
async fn read_trust(
    client: &Client,
    sync: &LockstepSync,
    trust: &TrustRef,
) -> Result<AllowedSigners, Refusal> {
    let (text, source) = read_text(client, sync, trust).await?;
    AllowedSigners::parse(&text, &source)
        .map_err(|e| Refusal::new(FailedStep::Trust, "TrustInvalid", describe(&e)))
}

/// `spec.provenance`: the cosign public keys (PEM, one or more) from the cluster, and the
/// images they must have signed, as one rule.
async fn read_provenance(
    client: &Client,
    sync: &LockstepSync,
    wanted: &crate::cluster::crd::ProvenanceSpec,
) -> Result<crate::provenance::ProvenanceRule, Refusal> {
    let invalid = |message: String| Refusal::new(FailedStep::Trust, "TrustInvalid", message);
    let mut sources = Vec::new();
    let keys = match &wanted.keys {
        None => Vec::new(),
        Some(keys) => {
            let (text, source) = read_text(client, sync, keys).await?;
            sources.push(source.clone());
            crate::provenance::CosignKey::all_from_pem(&source, text.as_bytes())
                .map_err(|e| invalid(e.to_string()))?
        }
    };
    let certificate = match &wanted.certificate {
        None => None,
        Some(c) => {
            let (text, source) = read_text(client, sync, &c.roots).await?;
            sources.push(source.clone());
            let roots = crate::provenance::certificate::pem_chain(text.as_bytes())
                .map_err(|e| invalid(format!("{source}: {e}")))?;
            if c.identity.trim().is_empty() || c.issuer.trim().is_empty() {
                return Err(Refusal::new(
                    FailedStep::Spec,
                    "InvalidSpec",
                    "spec.provenance.certificate needs an identity and an issuer".into(),
                ));
            }
            Some(crate::provenance::CertificatePolicy {
                roots,
                root_files: vec![source],
                identity: c.identity.trim().to_owned(),
                issuer: Some(c.issuer.trim().to_owned()),
            })
        }
    };
    if keys.is_empty() && certificate.is_none() {
        return Err(Refusal::new(
            FailedStep::Spec,
            "InvalidSpec",
            "spec.provenance names neither keys nor a certificate requirement".into(),
        ));
    }
    let source = sources.join(", ");
    let images = if wanted.images.is_empty() {
        vec![crate::provenance::ImagePattern::parse("**/**").expect("the any-image pattern parses")]
    } else {
        wanted
            .images
            .iter()
            .map(|p| crate::provenance::ImagePattern::parse(p))
            .collect::<Result<_, _>>()
            .map_err(|e| {
                Refusal::new(
                    FailedStep::Spec,
                    "InvalidSpec",
                    format!("spec.provenance.images: {e}"),
                )
            })?
    };
    Ok(crate::provenance::ProvenanceRule {
        at: format!("spec.provenance ({source})"),
        images,
        key_files: keys.iter().map(|k| k.fingerprint.clone()).collect(),
        keys,
        certificate,
        attestations: wanted.attestations.clone(),
    })
}

/// The text under `trust`'s key of its ConfigMap or Secret in the sync's namespace, and how
/// messages name it.
async fn read_text(
    client: &Client,
    sync: &LockstepSync,
    trust: &TrustRef,
) -> Result<(String, String), Refusal> {
    let namespace = sync.namespace().unwrap_or_default();
    let source = format!(
        "{:?} {}/{} key {:?}",
        trust.kind, namespace, trust.name, trust.key
    );
    let text: Option<Vec<u8>> = match trust.kind {
        TrustKind::ConfigMap => {
            let map: ConfigMap = get_trust(client, &namespace, &trust.name, &source).await?;
            map.data
                .as_ref()
                .and_then(|d| d.get(&trust.key))
                .map(|s| s.as_bytes().to_vec())
                .or_else(|| {
                    map.binary_data
                        .as_ref()
                        .and_then(|d| d.get(&trust.key))
                        .map(|b| b.0.clone())
                })
        }
        TrustKind::Secret => {
            let secret: Secret = get_trust(client, &namespace, &trust.name, &source).await?;
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(&trust.key))
                .map(|b| b.0.clone())
        }
    };
    let refused = |reason, message| Refusal::new(FailedStep::Trust, reason, message);
    let text = text.ok_or_else(|| refused("TrustNotFound", format!("{source}: no such key")))?;
    let text = String::from_utf8(text)
        .map_err(|_| refused("TrustInvalid", format!("{source}: not UTF-8")))?;
    Ok((text, source))
}

/// The ConfigMap or Secret holding the trust: `TrustNotFound` when it does not exist.
async fn get_trust<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    source: &str,
) -> Result<K, Refusal>
where
    K: kube::Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.get_opt(name)
        .await
        .map_err(|e| Refusal::of_kube(FailedStep::Trust, format!("cannot read {source}"), &e))?
        .ok_or_else(|| {
            Refusal::new(
                FailedStep::Trust,
                "TrustNotFound",
                format!(
                    "{source}: the {} does not exist",
                    K::kind(&Default::default())
                ),
            )
        })
}

/// Read the Git credentials Secret: for an SSH URL `identity` (a deploy key) and
/// `known_hosts`; for HTTPS `token`, or `username` and `password`.
async fn read_credentials(
    client: &Client,
    sync: &LockstepSync,
) -> Result<Option<GitCredentials>, Refusal> {
    let Some(secret_ref) = &sync.spec.git_credentials else {
        return Ok(None);
    };
    let namespace = sync.namespace().unwrap_or_default();
    let what = format!("Secret {namespace}/{}", secret_ref.name);
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let secret = api
        .get_opt(&secret_ref.name)
        .await
        .map_err(|e| Refusal::of_kube(FailedStep::Fetch, format!("cannot read {what}"), &e))?
        .ok_or_else(|| {
            Refusal::new(
                FailedStep::Fetch,
                "CredentialsNotFound",
                format!("{what} (spec.gitCredentials) does not exist"),
            )
        })?;
    let data = secret.data.unwrap_or_default();
    let text = |key: &str| {
        data.get(key)
            .map(|b| String::from_utf8_lossy(&b.0).trim_end().to_owned())
    };
    if git::ssh::is_ssh_url(&sync.spec.url) {
        return match (text("identity"), text("known_hosts")) {
            (Some(identity), Some(known_hosts)) => Ok(Some(GitCredentials::Ssh(SshCredentials {
                identity: identity.into(),
                known_hosts,
            }))),
            (identity, _) => Err(Refusal::new(
                FailedStep::Fetch,
                "CredentialsInvalid",
                format!(
                    "{what} has no `{}`: an SSH URL needs `identity` (a deploy key) and `known_hosts` (the server's host keys)",
                    if identity.is_none() {
                        "identity"
                    } else {
                        "known_hosts"
                    }
                ),
            )),
        };
    }
    let credentials = match (text("username"), text("password"), text("token")) {
        (Some(username), Some(password), _) => HttpCredentials {
            username,
            password: password.into(),
        },
        (username, None, Some(token)) => HttpCredentials {
            // Forges take any user name with a token as the password.
            username: username.unwrap_or_else(|| "git".to_owned()),
            password: token.into(),
        },
        _ => {
            return Err(Refusal::new(
                FailedStep::Fetch,
                "CredentialsInvalid",
                format!("{what} has neither `token` nor `username` and `password`"),
            ));
        }
    };
    Ok(Some(GitCredentials::Http(credentials)))
}
