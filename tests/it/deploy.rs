//! `deploy/`, what a user installs the controller with: the CRD is the generated one, the
//! kustomization lists every manifest, a real API server (the control plane the reconcile
//! tests share) accepts them all, the Pod passes Pod Security "restricted" and becomes
//! available, and the ServiceAccount may do what the controller does — and not more.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use kube::{Client, ResourceExt as _};
use serde_json::Value;

use lockstep::cluster::crd::crd_yaml;

const NAMESPACE: &str = "lockstep-system";
const SERVICE_ACCOUNT: &str = "system:serviceaccount:lockstep-system:lockstep";
const FIELD_MANAGER: &str = "lockstep-deploy-test";

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Every YAML document of a file, as JSON values (empty documents skipped).
pub(crate) fn documents(rel: &str) -> Vec<Value> {
    let path = repo_path(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// The `resources:` of a kustomization, as paths relative to the repository.
fn kustomization_resources(dir: &str) -> Vec<String> {
    let kustomization = &documents(&format!("{dir}/kustomization.yaml"))[0];
    kustomization["resources"]
        .as_array()
        .expect("a kustomization lists resources")
        .iter()
        .map(|r| format!("{dir}/{}", r.as_str().unwrap()))
        .collect()
}

#[test]
fn deploy_crd_and_schema_crd_are_current() {
    let expected = crd_yaml();
    for rel in ["deploy/crd.yaml", "schema/crd.yaml"] {
        let path = repo_path(rel);
        if std::fs::read_to_string(&path).unwrap_or_default() == expected {
            continue;
        }
        if std::env::var_os("LOCKSTEP_UPDATE_SCHEMA").is_some() {
            std::fs::write(&path, &expected).unwrap();
        } else {
            panic!("{rel} is stale: run LOCKSTEP_UPDATE_SCHEMA=1 cargo test --test it deploy");
        }
    }
}

#[test]
fn the_kustomizations_list_every_manifest_in_their_directory() {
    for dir in ["deploy", "deploy/example"] {
        let listed: BTreeSet<String> = kustomization_resources(dir).into_iter().collect();
        let present: BTreeSet<String> = std::fs::read_dir(repo_path(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
            .map(|name| format!("{dir}/{name}"))
            .collect();
        assert_eq!(listed, present, "{dir}/kustomization.yaml resources");
    }
}

/// The container of the controller's Deployment.
fn controller_container() -> Value {
    let deployment = &documents("deploy/deployment.yaml")[0];
    deployment["spec"]["template"]["spec"]["containers"][0].clone()
}

#[test]
fn the_deployment_matches_the_kustomization_and_the_lease_role() {
    let container = controller_container();
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "controller");
    for flag in ["--leader-election", "--log-format=json"] {
        assert!(
            args.contains(&flag),
            "deployment args lack {flag}: {args:?}"
        );
    }
    // The Role grants get/update on the Lease by name: the flag must name the same one.
    let lease = args
        .iter()
        .find_map(|a| a.strip_prefix("--lease-name="))
        .expect("--lease-name is set");
    let role = documents("deploy/rbac.yaml")
        .into_iter()
        .find(|d| d["kind"] == "Role" && d["metadata"]["name"] == "lockstep-leader-election")
        .expect("rbac.yaml has the leader-election Role");
    let named: Vec<&Value> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["resourceNames"].as_array())
        .flatten()
        .collect();
    assert_eq!(named, [lease]);
    // The cache directory is the writable emptyDir (the root filesystem is read-only).
    let cache = args
        .iter()
        .find_map(|a| a.strip_prefix("--cache-dir="))
        .expect("--cache-dir is set");
    assert!(
        container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == cache),
        "no volume mounted at {cache}"
    );
    let image = container["image"].as_str().unwrap();
    let kustomization = &documents("deploy/kustomization.yaml")[0];
    let entry = &kustomization["images"][0];
    assert_eq!(
        format!(
            "{}:{}",
            entry["newName"].as_str().unwrap(),
            entry["newTag"].as_str().unwrap()
        ),
        image
    );
    assert_eq!(entry["name"].as_str(), image.split(':').next());
}

// ------------------------------------------------------------------ on the control plane

/// Server-side apply each object (dry run: validated and admitted, not stored). Kinds are
/// looked up by discovery, retried briefly for a CRD applied just before.
pub(crate) async fn apply(client: &Client, objects: &[Value], dry_run: bool) {
    for object in objects {
        let obj: DynamicObject = serde_json::from_value(object.clone()).unwrap();
        let types = obj.types.clone().expect("apiVersion and kind");
        let (group, version) = match types.api_version.split_once('/') {
            Some((g, v)) => (g.to_owned(), v.to_owned()),
            None => (String::new(), types.api_version.clone()),
        };
        let gvk = GroupVersionKind::gvk(&group, &version, &types.kind);
        let deadline = Instant::now() + Duration::from_secs(20);
        let (resource, caps) = loop {
            match kube::discovery::pinned_kind(client, &gvk).await {
                Ok(found) => break found,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("{} {} is not served: {e}", types.api_version, types.kind),
            }
        };
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                obj.namespace()
                    .as_deref()
                    .expect("namespaced objects name one"),
                &resource,
            ),
            Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        let mut params = PatchParams::apply(FIELD_MANAGER).force();
        params.dry_run = dry_run;
        api.patch(&obj.name_any(), &params, &Patch::Apply(object))
            .await
            .unwrap_or_else(|e| panic!("{} {}: {e}", types.kind, obj.name_any()));
    }
}

async fn wait_established(client: &Client, name: &str) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let crd = crds.get(name).await.unwrap();
        let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        if conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "CRD {name} is not Established: {conditions:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// kwok runs the Pod; the ReplicaSet's Pods only exist when admission (Pod Security
/// "restricted", enforced by namespace.yaml) accepts the Pod template.
async fn wait_available(client: &Client) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let deployment = api.get("lockstep-controller").await.unwrap();
        let status = deployment.status.unwrap_or_default();
        if status.available_replicas == Some(1) {
            return;
        }
        if Instant::now() >= deadline {
            // Why no Pod: admission's refusal is on the ReplicaSet (ReplicaFailure).
            let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NAMESPACE);
            let why: Vec<String> = sets
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .flat_map(|rs| rs.status.and_then(|s| s.conditions).unwrap_or_default())
                .filter_map(|c| c.message)
                .collect();
            panic!("lockstep-controller is not available after 60 s: {why:?} {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One access question: verb on group/resource[/subresource] [name] in namespace ("" for
/// cluster-wide), or verb on a non-resource path when `resource` starts with '/'.
struct Access {
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    namespace: &'static str,
    name: &'static str,
}

const fn access(
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    namespace: &'static str,
    name: &'static str,
) -> Access {
    Access {
        verb,
        group,
        resource,
        namespace,
        name,
    }
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ns = if self.namespace.is_empty() {
            "(all namespaces)"
        } else {
            self.namespace
        };
        let group = if self.group.is_empty() { "" } else { "." };
        write!(
            f,
            "{} {}{group}{} {:?} in {ns}",
            self.verb, self.resource, self.group, self.name
        )
    }
}

/// What the API server's authorizer answers for the controller's ServiceAccount.
async fn allowed(client: &Client, access: &Access) -> bool {
    let mut spec = SubjectAccessReviewSpec {
        user: Some(SERVICE_ACCOUNT.to_owned()),
        groups: Some(vec![
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{NAMESPACE}"),
            "system:authenticated".to_owned(),
        ]),
        ..Default::default()
    };
    if access.resource.starts_with('/') {
        spec.non_resource_attributes = Some(NonResourceAttributes {
            path: Some(access.resource.to_owned()),
            verb: Some(access.verb.to_owned()),
        });
    } else {
        let (resource, subresource) = match access.resource.split_once('/') {
            Some((r, s)) => (r, Some(s.to_owned())),
            None => (access.resource, None),
        };
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        spec.resource_attributes = Some(ResourceAttributes {
            verb: Some(access.verb.to_owned()),
            group: Some(access.group.to_owned()),
            resource: Some(resource.to_owned()),
            subresource,
            namespace: some(access.namespace),
            name: some(access.name),
            ..Default::default()
        });
    }
    let review = SubjectAccessReview {
        spec,
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await.unwrap();
    answer.status.is_some_and(|s| s.allowed)
}

/// What the controller's code does, so what its ServiceAccount must be allowed.
const NEEDED: &[Access] = &[
    // the watch over every namespace, and the read at the start of a pass
    access("list", "lockstep.dev", "lockstepsyncs", "", ""),
    access("watch", "lockstep.dev", "lockstepsyncs", "", ""),
    access("get", "lockstep.dev", "lockstepsyncs", "shop", "app"),
    // status: server-side apply of the status subresource
    access(
        "patch",
        "lockstep.dev",
        "lockstepsyncs/status",
        "shop",
        "app",
    ),
    // Events on a sync, in its namespace: created, then patched as they repeat
    access("create", "events.k8s.io", "events", "shop", ""),
    access("patch", "events.k8s.io", "events", "shop", "app.1"),
    access("get", "events.k8s.io", "events", "shop", "app.1"),
    // trust and Git credentials of syncs in lockstep-system
    access("get", "", "configmaps", NAMESPACE, "trust"),
    access("get", "", "secrets", NAMESPACE, "git-credentials"),
    // the opt-in it asks about before reading them, and the asking
    access("get", "lockstep.dev", "sources", NAMESPACE, ""),
    access(
        "create",
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "",
        "",
    ),
    // leader election
    access("create", "coordination.k8s.io", "leases", NAMESPACE, ""),
    access(
        "get",
        "coordination.k8s.io",
        "leases",
        NAMESPACE,
        "lockstep-controller",
    ),
    access(
        "update",
        "coordination.k8s.io",
        "leases",
        NAMESPACE,
        "lockstep-controller",
    ),
    // discovery, and readiness (is LockstepSync served?)
    access("get", "", "/apis/lockstep.dev/v1alpha1", "", ""),
    access("get", "", "/api/v1", "", ""),
    // the applier: read, apply (create + patch), prune (delete)
    access("get", "apps", "deployments", "shop", "api"),
    access("create", "apps", "deployments", "shop", "api"),
    access("patch", "apps", "deployments", "shop", "api"),
    access("delete", "apps", "deployments", "shop", "api"),
    access("patch", "", "configmaps", "shop", "settings"),
    access("create", "", "namespaces", "", "shop"),
    access("patch", "", "namespaces", "", "shop"),
    // the prune check: what a Namespace holds before it is pruned
    access("list", "apps", "deployments", "shop", ""),
    access("list", "", "configmaps", "shop", ""),
    access("list", "", "pods", "shop", ""),
];

/// What it must not be allowed: least privilege, checked.
const DENIED: &[Access] = &[
    // Secrets are read by name, and only where a RoleBinding allows it
    access("list", "", "secrets", NAMESPACE, ""),
    access("watch", "", "secrets", NAMESPACE, ""),
    access("get", "", "secrets", "shop", "git-credentials"),
    access("create", "", "secrets", "shop", "x"),
    // a namespace nobody opted in (the applier may read its ConfigMaps: this is the gate)
    access("get", "lockstep.dev", "sources", "shop", ""),
    // the spec is the user's: never written, never deleted
    access("patch", "lockstep.dev", "lockstepsyncs", "shop", "app"),
    access("update", "lockstep.dev", "lockstepsyncs", "shop", "app"),
    access("delete", "lockstep.dev", "lockstepsyncs", "shop", "app"),
    // only its own Lease, only in its namespace
    access(
        "update",
        "coordination.k8s.io",
        "leases",
        NAMESPACE,
        "someone-else",
    ),
    access(
        "update",
        "coordination.k8s.io",
        "leases",
        "kube-system",
        "lockstep-controller",
    ),
    access("create", "coordination.k8s.io", "leases", "kube-system", ""),
    // no RBAC or CRDs unless added on purpose, no Pods, no impersonation
    access(
        "create",
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        "",
        "x",
    ),
    access("patch", "rbac.authorization.k8s.io", "roles", "shop", "x"),
    access(
        "create",
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "",
        "x",
    ),
    access("create", "", "pods", "shop", ""),
    access("impersonate", "", "serviceaccounts", "shop", "default"),
    // the prune check lists, it never watches, and never Secrets
    access("watch", "apps", "deployments", "", ""),
    access("watch", "", "configmaps", "shop", ""),
    access("list", "", "secrets", "shop", ""),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_is_accepted_by_a_real_api_server_and_grants_exactly_what_the_controller_uses() {
    let client = crate::reconcile::client().await;

    for rel in kustomization_resources("deploy") {
        apply(&client, &documents(&rel), false).await;
        if rel.ends_with("crd.yaml") {
            wait_established(&client, "lockstepsyncs.lockstep.dev").await;
        }
    }
    wait_available(&client).await;
    // The example validates against the CRD's schema (dry run: nothing reconciles it).
    for rel in kustomization_resources("deploy/example") {
        apply(&client, &documents(&rel), true).await;
    }

    // RBAC is read through informers: wait until the grants are visible, then judge.
    let deadline = Instant::now() + Duration::from_secs(20);
    for access in NEEDED {
        while !allowed(&client, access).await {
            assert!(
                Instant::now() < deadline,
                "the controller's ServiceAccount may not {access}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut too_much = Vec::new();
    for access in DENIED {
        if allowed(&client, access).await {
            too_much.push(access.to_string());
        }
    }
    assert!(
        too_much.is_empty(),
        "the controller's ServiceAccount may do more than it needs: {too_much:#?}"
    );
}
