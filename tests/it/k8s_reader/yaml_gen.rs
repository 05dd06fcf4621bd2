//! A generator of Kubernetes manifests for the differential tests: mostly plausible objects
//! (Deployment, Pod, CronJob, StatefulSet, Service, ConfigMap, Secret, List, CRDs and custom
//! resources with containers, images, env, labels, resources and numbers) written with
//! varied but valid syntax that lockstep should accept, so that agreement with kubectl is
//! tested where it matters; and a smaller share (about a quarter) with one or two "hostile"
//! mutations that readers disagree on and lockstep should refuse.
//!
//! The plausible syntax: every scalar style (plain, multi-line plain, single, double with
//! escapes, literal and folded with chomping and indentation indicators), flow and block
//! collections mixed, comments everywhere (after quoted scalars, inside flow collections,
//! after `---`), blank lines, CRLF, a BOM at the start, empty and comment-only documents,
//! anchors and aliases on values that are not images, plain `<<` merges without overlaps,
//! numbers, booleans and nulls in every spelling both readers agree on, sequences indented
//! or not under their key, `? ` explicit keys, quoted keys with escapes, long lines, Unicode.
//!
//! The hostile mutations: tags, Unicode line breaks, `---#` and `...` lines (also inside
//! block scalars), alias keys, merge overlaps, quoted merge keys, duplicate keys, tabs as
//! indentation, YAML 1.1 scalars, directives, lone CRs, BOMs later in the file, long keys,
//! JSON documents (valid and not) and JSON mixed with YAML, Helm templates, image scalars
//! behind anchors or in block scalars, `items` outside Lists.
//!
//! Deterministic from a byte string (`Gen::new`): `generate(&mut Gen) -> Generated`.

/// The source of every choice: a splitmix64 stream seeded from bytes.
pub struct Gen {
    state: u64,
    /// Anchors defined so far in this document: name → the keys of the mapping (or `None`
    /// for anything else), for aliases and merges.
    anchors: Vec<(String, Option<Vec<String>>)>,
    next_anchor: usize,
    /// No anchors, aliases or merges (documents rendered as JSON).
    plain_model: bool,
}

impl Gen {
    pub fn new(seed: &[u8]) -> Gen {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for &b in seed {
            state = (state ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        Gen {
            state,
            anchors: Vec::new(),
            next_anchor: 0,
            plain_model: false,
        }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn new_anchor(&mut self) -> String {
        let name = match self.below(4) {
            0 => format!("a{}", self.next_anchor),
            1 => format!("defaults-{}", self.next_anchor),
            2 => format!("x_{}", self.next_anchor),
            _ => format!("ref-{}", self.next_anchor),
        };
        self.next_anchor += 1;
        name
    }
}

/// One generated input and how it was made.
pub struct Generated {
    pub bytes: Vec<u8>,
    /// Whether hostile mutations were applied (the plausible share should mostly be accepted).
    pub hostile: bool,
}

/// One input file: one to four documents, mostly plausible, sometimes hostile.
pub fn generate(g: &mut Gen) -> Generated {
    let hostile = g.chance(25);
    let mut text = if g.chance(if hostile { 25 } else { 4 }) {
        json_file(g, hostile)
    } else {
        yaml_file(g)
    };
    if hostile {
        for _ in 0..1 + g.below(2) {
            text = mutate(g, text);
        }
    }
    if g.chance(12) {
        text = text.replace('\n', "\r\n");
    }
    // A BOM before a `{` makes kubectl read YAML, where a JSON `\/` fails
    // (fixtures/differential/escaped-slash-in-double-quoted-yaml.yaml): not with `\/`.
    if g.chance(8) && !text.contains("\\/") {
        text.insert(0, '\u{feff}');
    }
    Generated {
        bytes: text.into_bytes(),
        hostile,
    }
}

// ------------------------------------------------------------------ the model

/// A node before rendering.
#[derive(Clone, Debug)]
enum N {
    /// A string value; rendered so that it reads as a string.
    Str(String),
    /// An image reference: plain, single or double quoted without escapes (lockstep pins it
    /// in place).
    Image(String),
    /// A plain scalar written as is: a number, boolean or null in one of its spellings.
    Raw(&'static str),
    Map(Vec<(String, N)>),
    Seq(Vec<N>),
    /// `&name value`.
    Anchor(String, Box<N>),
    /// `*name`.
    Alias(String),
}

fn st(s: &str) -> N {
    N::Str(s.to_owned())
}

fn m(entries: Vec<(&str, N)>) -> N {
    N::Map(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

const IMAGES: &[&str] = &[
    "nginx:1.25",
    "nginx",
    "reg.example/app:1.4",
    "busybox:1.36",
    "ghcr.io/acme/api@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "ghcr.io/acme/api:v1.2.3@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "registry.example:5000/team/worker:v2",
    "localhost/x:latest",
    "quay.io/prometheus/node-exporter:v1.8.1",
    "docker.io/library/redis:7-alpine",
    "gcr.io/distroless/static-debian12:nonroot",
];

const NAMES: &[&str] = &[
    "web",
    "api",
    "worker",
    "db-migrate",
    "nightly-report",
    "cache",
    "frontend-v2",
    "x",
    "a.b.c",
    "metrics-exporter",
];

/// Strings both readers read as strings when written plain (in block context at least).
const WORDS: &[&str] = &[
    "web",
    "production",
    "value with spaces",
    "a-b_c.d",
    "ünïcödé",
    "日本語のテキスト",
    "emoji 😀 ok",
    "http://example.com/path?q=1&r=2",
    "/var/run/app.sock",
    "500m",
    "128Mi",
    "1Gi",
    "0 * * * *",
    "*/5 * * * *",
    "1.2.3",
    "10.0.0.1",
    "50%",
    "8080/TCP",
    "key=value",
    "--flag=x",
    "-v",
    "a:b",
    "x#y",
    "IfNotPresent",
    "RollingUpdate",
    "ClusterIP",
    "TCP",
    "Always",
    "a'quote",
    "say \"hi\"",
    "back\\slash",
    "trailing-dot.",
    "percent%",
    "at@sign",
    "caret^",
    "tilde~x",
    "Yes please",
    "not null",
    "nullable",
    "true-ish",
    "0x",
    "1e",
    "1.2.3.4",
    "-",
    "e",
];

/// Strings that need quotes (or a block scalar): plain they would be read otherwise or not
/// at all.
const QUOTED_ONLY: &[&str] = &[
    "",
    " leading space",
    "trailing space ",
    "true",
    "false",
    "null",
    "~",
    "yes",
    "no",
    "on",
    "off",
    "y",
    "N",
    "123",
    "0755",
    "0x1F",
    "1e3",
    "1_000",
    ".inf",
    "2024-01-01",
    "a: b",
    "a #b",
    "#comment",
    "- dash",
    "? q",
    "{braces}",
    "[brackets]",
    "x, y",
    "*star",
    "&amp",
    "!bang",
    "%pct",
    "@at",
    "`tick",
    "|pipe",
    ">gt",
    "'single'",
    "\"double\"",
    "line1\nline2",
    "line1\nline2\n",
    "tab\there",
    "\n",
    "<<",
    "---",
    "...",
    "{{ .Values.image }}",
];

/// Plain spellings of numbers, booleans and nulls that go-yaml v2 and YAML 1.2 read alike.
const RAW: &[&str] = &[
    "0",
    "-0",
    "1",
    "3",
    "+12",
    "-7",
    "42",
    "8080",
    "65535",
    "30",
    "600",
    "9007199254740993",
    "9223372036854775807",
    "-9223372036854775808",
    "1.5",
    "0.5",
    ".5",
    "-.5",
    "+.5",
    "2.50",
    "1.0",
    "1.",
    "0.",
    "1e3",
    "1E3",
    "1e+3",
    "6.02e23",
    "1.5e-7",
    "1e-400",
    "3.14159265358979323846",
    "1e20",
    "1e300",
    "123456.789",
    "true",
    "True",
    "TRUE",
    "false",
    "False",
    "FALSE",
    "null",
    "Null",
    "NULL",
    "~",
];

/// YAML 1.1 spellings, out-of-range numbers and other plain scalars lockstep refuses.
const AMBIGUOUS: &[&str] = &[
    "yes",
    "No",
    "on",
    "OFF",
    "y",
    "N",
    "0755",
    "0x1F",
    "0o17",
    "0b101",
    "1_000",
    "09",
    "012.5",
    ".inf",
    "-.Inf",
    ".nan",
    "2024-01-01",
    "2001-12-14T21:59:43.10Z",
    "99999999999999999999",
    "1e999",
    "<<",
    "=",
];

fn word(g: &mut Gen) -> N {
    if g.chance(8) {
        st(g.pick(QUOTED_ONLY))
    } else {
        st(g.pick(WORDS))
    }
}

fn raw(g: &mut Gen) -> N {
    N::Raw(g.pick(RAW))
}

fn scalar_value(g: &mut Gen) -> N {
    match g.below(10) {
        0..=5 => word(g),
        6..=8 => raw(g),
        _ => st(&long_text(g)),
    }
}

fn long_text(g: &mut Gen) -> String {
    let most = if g.chance(10) { 400 } else { 30 };
    let n = 1 + g.below(most);
    let mut out = String::new();
    for i in 0..n {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(g.pick(&[
            "lorem",
            "ipsum",
            "dolor",
            "sït",
            "amet",
            "κόσμε",
            "x=1",
            "a-b",
        ]));
    }
    out
}

/// An anchored copy of `node` when the document may have anchors; remembers its keys.
fn maybe_anchor(g: &mut Gen, node: N, percent: usize) -> N {
    if g.plain_model || !g.chance(percent) {
        return node;
    }
    let name = g.new_anchor();
    let keys = match &node {
        N::Map(entries) => Some(entries.iter().map(|(k, _)| k.clone()).collect()),
        _ => None,
    };
    g.anchors.push((name.clone(), keys));
    N::Anchor(name, Box::new(node))
}

/// An alias to an earlier anchored mapping, if there is one.
fn alias_to_map(g: &mut Gen) -> Option<(String, Vec<String>)> {
    let maps: Vec<_> = g
        .anchors
        .iter()
        .filter_map(|(n, k)| k.clone().map(|k| (n.clone(), k)))
        .collect();
    if maps.is_empty() {
        return None;
    }
    Some(maps[g.below(maps.len())].clone())
}

/// A string map (labels, annotations, selectors): maybe an alias, maybe with a merge.
fn string_map(g: &mut Gen, keys: &[&str]) -> N {
    if !g.plain_model
        && g.chance(15)
        && let Some((name, _)) = alias_to_map(g)
    {
        return N::Alias(name);
    }
    let mut entries: Vec<(String, N)> = Vec::new();
    let mut taken: Vec<String> = Vec::new();
    if !g.plain_model
        && g.chance(12)
        && let Some((name, merged)) = alias_to_map(g)
    {
        entries.push(("<<".into(), N::Alias(name)));
        taken = merged;
    }
    for _ in 0..1 + g.below(3) {
        let key = g.pick(keys).to_owned();
        if taken.contains(&key) {
            continue;
        }
        taken.push(key.clone());
        let value = if g.chance(90) {
            word(g)
        } else {
            st(&long_text(g))
        };
        entries.push((key, value));
    }
    if entries.is_empty() {
        entries.push(("app.kubernetes.io/part-of".into(), st("demo")));
    }
    maybe_anchor(g, N::Map(entries), 20)
}

const LABEL_KEYS: &[&str] = &[
    "app",
    "tier",
    "app.kubernetes.io/name",
    "app.kubernetes.io/version",
    "team",
    "example.com/owner",
    "release",
];

const ANNOTATION_KEYS: &[&str] = &[
    "note",
    "description",
    "kubectl.kubernetes.io/last-applied-configuration",
    "prometheus.io/scrape",
    "example.com/long",
    "checksum/config",
];

fn metadata(g: &mut Gen, namespaced: bool) -> N {
    let mut entries = vec![("name".to_owned(), st(g.pick(NAMES)))];
    if namespaced && g.chance(30) {
        entries.push((
            "namespace".into(),
            st(g.pick(&["prod", "default", "kube-system"])),
        ));
    }
    if g.chance(60) {
        entries.push(("labels".into(), string_map(g, LABEL_KEYS)));
    }
    if g.chance(25) {
        entries.push(("annotations".into(), string_map(g, ANNOTATION_KEYS)));
    }
    N::Map(entries)
}

fn resources(g: &mut Gen) -> N {
    if !g.plain_model
        && g.chance(15)
        && let Some((name, _)) = alias_to_map(g)
    {
        return N::Alias(name);
    }
    let quantity = |g: &mut Gen| -> N {
        match g.below(4) {
            0 => N::Raw(g.pick(&["1", "2", "0.5", ".25", "1.5", "100", "1e3"])),
            _ => st(g.pick(&["500m", "100m", "128Mi", "1Gi", "2", "250M", "1.5", "0.5"])),
        }
    };
    let mut entries = Vec::new();
    for part in ["limits", "requests"] {
        if g.chance(70) {
            let mut inner = vec![("cpu".to_owned(), quantity(g))];
            if g.chance(70) {
                inner.push(("memory".into(), quantity(g)));
            }
            if g.chance(10) {
                inner.push(("nvidia.com/gpu".into(), N::Raw("1")));
            }
            entries.push((part.to_owned(), maybe_anchor(g, N::Map(inner), 10)));
        }
    }
    maybe_anchor(g, N::Map(entries), 20)
}

fn env(g: &mut Gen) -> N {
    let mut items = Vec::new();
    for i in 0..1 + g.below(4) {
        let mut e = vec![("name".to_owned(), st(&format!("VAR_{i}")))];
        match g.below(6) {
            0 => e.push((
                "valueFrom".into(),
                m(vec![(
                    "secretKeyRef",
                    m(vec![("name", st("creds")), ("key", st("password"))]),
                )]),
            )),
            1 => e.push(("value".into(), st(&long_text(g)))),
            2 if !g.plain_model && !g.anchors.is_empty() && g.chance(50) => {
                let i = g.below(g.anchors.len());
                let (name, keys) = g.anchors[i].clone();
                if keys.is_none() {
                    e.push(("value".into(), N::Alias(name)));
                } else {
                    e.push(("value".into(), word(g)));
                }
            }
            _ => {
                let v = if g.chance(80) { word(g) } else { raw(g) };
                e.push(("value".into(), maybe_anchor(g, v, 10)));
            }
        }
        items.push(N::Map(e));
    }
    N::Seq(items)
}

fn container(g: &mut Gen, i: usize) -> N {
    let mut entries = vec![
        ("name".to_owned(), st(&format!("c{i}"))),
        ("image".into(), N::Image(g.pick(IMAGES).to_owned())),
    ];
    if g.chance(20) {
        entries.swap(0, 1);
    }
    if g.chance(30) {
        entries.push((
            "imagePullPolicy".into(),
            st(g.pick(&["IfNotPresent", "Always", "Never"])),
        ));
    }
    if g.chance(30) {
        let n = g.below(4);
        let args = (0..n).map(|_| scalar_value(g)).collect();
        entries.push((g.pick(&["args", "command"]).into(), N::Seq(args)));
    }
    if g.chance(40) {
        entries.push(("env".into(), env(g)));
    }
    if g.chance(40) {
        entries.push(("resources".into(), resources(g)));
    }
    if g.chance(30) {
        let ports = (0..1 + g.below(2))
            .map(|_| {
                m(vec![
                    (
                        "containerPort",
                        N::Raw(g.pick(&["80", "8080", "443", "9090"])),
                    ),
                    ("protocol", st("TCP")),
                ])
            })
            .collect();
        entries.push(("ports".into(), N::Seq(ports)));
    }
    if g.chance(15) {
        let context = m(vec![
            ("runAsNonRoot", N::Raw(g.pick(&["true", "True", "TRUE"]))),
            ("runAsUser", N::Raw(g.pick(&["1000", "65534"]))),
        ]);
        entries.push(("securityContext".into(), maybe_anchor(g, context, 20)));
    }
    if g.chance(15) {
        entries.push((
            "readinessProbe".into(),
            m(vec![
                (
                    "httpGet",
                    m(vec![("path", st("/healthz")), ("port", N::Raw("8080"))]),
                ),
                ("initialDelaySeconds", raw(g)),
                ("periodSeconds", N::Raw("10")),
            ]),
        ));
    }
    N::Map(entries)
}

fn pod_spec(g: &mut Gen) -> N {
    let mut entries = Vec::new();
    for field in ["initContainers", "containers", "ephemeralContainers"] {
        if field == "containers" || g.chance(15) {
            let n = usize::from(field == "containers") + g.below(2);
            let list = (0..n).map(|i| container(g, i)).collect();
            entries.push((field.to_owned(), N::Seq(list)));
        }
    }
    if g.chance(10) {
        entries.reverse();
    }
    if g.chance(15) {
        let vol = m(vec![
            ("name", st("v")),
            (
                "image",
                m(vec![("reference", N::Image(g.pick(IMAGES).into()))]),
            ),
        ]);
        let cm = m(vec![
            ("name", st("cfg")),
            ("configMap", m(vec![("name", st("cfg"))])),
        ]);
        entries.push(("volumes".into(), N::Seq(vec![cm, vol])));
    }
    if g.chance(20) {
        entries.push((
            "restartPolicy".into(),
            st(g.pick(&["Always", "OnFailure", "Never"])),
        ));
    }
    if g.chance(15) {
        entries.push(("terminationGracePeriodSeconds".into(), raw(g)));
    }
    if g.chance(10) {
        entries.push((
            "nodeSelector".into(),
            string_map(g, &["kubernetes.io/os", "disktype", "zone"]),
        ));
    }
    N::Map(entries)
}

fn template(g: &mut Gen, labels: Option<N>) -> N {
    let mut entries = Vec::new();
    if let Some(l) = labels {
        entries.push(("metadata".to_owned(), m(vec![("labels", l)])));
    }
    entries.push(("spec".into(), pod_spec(g)));
    N::Map(entries)
}

/// `labels` again (an alias when the first one was anchored) for selectors and templates.
fn labels_again(g: &mut Gen, meta: &N) -> N {
    if let N::Map(entries) = meta
        && let Some((_, l)) = entries.iter().find(|(k, _)| k == "labels")
    {
        return match l {
            N::Anchor(name, _) if g.chance(70) => N::Alias(name.clone()),
            N::Anchor(_, inner) => (**inner).clone(),
            N::Alias(name) => N::Alias(name.clone()),
            other => other.clone(),
        };
    }
    m(vec![("app", st("web"))])
}

fn workload(g: &mut Gen, api: &str, kind: &str) -> N {
    let meta = metadata(g, true);
    let mut entries = vec![
        ("apiVersion".to_owned(), st(api)),
        ("kind".into(), st(kind)),
    ];
    let meta_clone = meta.clone();
    entries.push(("metadata".into(), meta));
    let spec = match kind {
        "Pod" => pod_spec(g),
        "Job" => m(vec![
            ("backoffLimit", raw(g)),
            ("template", template(g, None)),
        ]),
        "CronJob" => {
            let job = m(vec![("spec", m(vec![("template", template(g, None))]))]);
            m(vec![
                (
                    "schedule",
                    st(g.pick(&["0 * * * *", "*/5 * * * *", "@daily"])),
                ),
                ("concurrencyPolicy", st("Forbid")),
                ("jobTemplate", job),
            ])
        }
        _ => {
            let selector = m(vec![("matchLabels", labels_again(g, &meta_clone))]);
            let tpl_labels = labels_again(g, &meta_clone);
            let mut spec = vec![
                (
                    "replicas".to_owned(),
                    N::Raw(g.pick(&["1", "3", "0", "10"])),
                ),
                ("selector".into(), selector),
            ];
            if kind == "StatefulSet" {
                spec.push(("serviceName".into(), st("svc")));
            }
            if g.chance(20) {
                spec.push((
                    "strategy".into(),
                    m(vec![
                        ("type", st("RollingUpdate")),
                        (
                            "rollingUpdate",
                            m(vec![
                                ("maxSurge", st("25%")),
                                ("maxUnavailable", N::Raw("0")),
                            ]),
                        ),
                    ]),
                ));
            }
            spec.push(("template".into(), template(g, Some(tpl_labels))));
            N::Map(spec)
        }
    };
    entries.push(("spec".into(), spec));
    N::Map(entries)
}

fn config_map(g: &mut Gen) -> N {
    let mut data = Vec::new();
    for i in 0..g.below(5) {
        let key = format!(
            "{}{i}",
            g.pick(&["config.yaml", "key", "app.properties", "x"])
        );
        let value = match g.below(4) {
            0 => st(&long_text(g)),
            1 => st(&embedded_yaml(g)),
            _ => word(g),
        };
        data.push((key, value));
    }
    let mut entries = vec![
        ("apiVersion".to_owned(), st("v1")),
        ("kind".into(), st(g.pick(&["ConfigMap", "Secret"]))),
        ("metadata".into(), metadata(g, true)),
    ];
    if !data.is_empty() || g.chance(50) {
        entries.push(("data".into(), N::Map(data)));
    }
    N::Map(entries)
}

/// Text with a manifest's look, for block scalars: `image:` lines, `---` and `#` inside.
fn embedded_yaml(g: &mut Gen) -> String {
    let mut lines = Vec::new();
    for _ in 0..1 + g.below(5) {
        lines.push(
            g.pick(&[
                "image: evil:1",
                "kind: Secret",
                "  nested: value",
                "# a comment in the text",
                "",
                "- item",
                "key: 'quoted'",
                "tab\tinside",
                "trailing space ",
                "  ",
                "日本語",
                "--- not a separator here",
                "{{ not helm }}",
            ])
            .to_owned(),
        );
    }
    // A first line of spaces only cannot start a block scalar without an indicator.
    if lines[0].trim().is_empty() {
        lines[0] = "first".into();
    }
    let mut s = lines.join("\n");
    if g.chance(60) {
        s.push('\n');
    }
    s
}

fn service(g: &mut Gen) -> N {
    let meta = metadata(g, true);
    let sel = labels_again(g, &meta);
    let port = m(vec![
        ("name", st("http")),
        ("port", N::Raw(g.pick(&["80", "443"]))),
        (
            "targetPort",
            if g.chance(50) {
                N::Raw("8080")
            } else {
                st("http")
            },
        ),
    ]);
    N::Map(vec![
        ("apiVersion".into(), st("v1")),
        ("kind".into(), st("Service")),
        ("metadata".into(), meta),
        (
            "spec".into(),
            m(vec![
                ("type", st("ClusterIP")),
                ("selector", sel),
                ("ports", N::Seq(vec![port])),
            ]),
        ),
    ])
}

fn crd(g: &mut Gen) -> N {
    let props = m(vec![
        (
            "image",
            m(vec![
                ("type", st("string")),
                ("pattern", st("^[a-z0-9./:@-]+$")),
            ]),
        ),
        (
            "replicas",
            m(vec![
                ("type", st("integer")),
                ("minimum", N::Raw("0")),
                ("maximum", N::Raw(g.pick(&["100", "1e3", "65535"]))),
                ("default", N::Raw("1")),
            ]),
        ),
        (
            "mode",
            m(vec![
                ("type", st("string")),
                (
                    "enum",
                    N::Seq(vec![st("fast"), st("safe"), st("Yes please")]),
                ),
            ]),
        ),
        (
            "description",
            m(vec![
                ("type", st("string")),
                ("description", st(&long_text(g))),
            ]),
        ),
    ]);
    let schema = m(vec![(
        "openAPIV3Schema",
        m(vec![
            ("type", st("object")),
            ("x-kubernetes-preserve-unknown-fields", N::Raw("true")),
            (
                "properties",
                m(vec![(
                    "spec",
                    m(vec![("type", st("object")), ("properties", props)]),
                )]),
            ),
        ]),
    )]);
    let version = m(vec![
        ("name", st("v1")),
        ("served", N::Raw("true")),
        ("storage", N::Raw(g.pick(&["true", "True"]))),
        ("schema", schema),
    ]);
    m(vec![
        ("apiVersion", st("apiextensions.k8s.io/v1")),
        ("kind", st("CustomResourceDefinition")),
        (
            "metadata",
            m(vec![("name", st("imagecaches.cache.example.com"))]),
        ),
        (
            "spec",
            m(vec![
                ("group", st("cache.example.com")),
                (
                    "names",
                    m(vec![
                        ("kind", st("ImageCache")),
                        ("plural", st("imagecaches")),
                    ]),
                ),
                ("scope", st("Namespaced")),
                ("versions", N::Seq(vec![version])),
            ]),
        ),
    ])
}

fn custom(g: &mut Gen) -> N {
    if g.chance(50) {
        let mut sidecars = Vec::new();
        for _ in 0..g.below(3) {
            sidecars.push(m(vec![("image", N::Image(g.pick(IMAGES).into()))]));
        }
        return N::Map(vec![
            ("apiVersion".into(), st("cache.example.com/v1")),
            ("kind".into(), st("ImageCache")),
            ("metadata".into(), metadata(g, true)),
            (
                "spec".into(),
                m(vec![
                    ("image", N::Image(g.pick(IMAGES).into())),
                    ("sidecars", N::Seq(sidecars)),
                    ("ttl", raw(g)),
                ]),
            ),
        ]);
    }
    workload(g, "argoproj.io/v1alpha1", "Rollout")
}

/// One object of a plausible kind (`list_ok`: may be a List).
fn object(g: &mut Gen, list_ok: bool) -> N {
    match g.below(if list_ok { 14 } else { 12 }) {
        0 | 1 => workload(g, "apps/v1", "Deployment"),
        2 => workload(g, "v1", "Pod"),
        3 => workload(g, "batch/v1", "CronJob"),
        4 => workload(g, "batch/v1", "Job"),
        5 => {
            let kind = g.pick(&["StatefulSet", "DaemonSet", "ReplicaSet"]);
            workload(g, "apps/v1", kind)
        }
        6 => config_map(g),
        7 => service(g),
        8 => crd(g),
        9 => custom(g),
        10 => {
            let kind = g.pick(&["ReplicationController", "PodTemplate"]);
            workload(g, "v1", kind)
        }
        11 => m(vec![
            ("apiVersion", st("example.com/v1")),
            ("kind", st("Widget")),
            ("metadata", m(vec![("name", st("w"))])),
            ("spec", m(vec![("size", raw(g)), ("note", word(g))])),
        ]),
        _ => {
            let items = (0..g.below(4)).map(|_| object(g, false)).collect();
            m(vec![
                ("apiVersion", st("v1")),
                (
                    "kind",
                    st(g.pick(&["List", "List", "DeploymentList", "ConfigMapList"])),
                ),
                ("metadata", m(vec![("resourceVersion", st(""))])),
                ("items", N::Seq(items)),
            ])
        }
    }
}

// ------------------------------------------------------------------ YAML rendering

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn comment_text(g: &mut Gen) -> String {
    let body = g.pick(&[
        "note",
        "image: evil:1",
        "---",
        "- not an item",
        "{{ .Values.x }}",
        "ünïcode ✓",
        "key: 'value' # nested",
        "",
        "\"quoted\"",
    ]);
    format!("#{}{body}", if g.chance(80) { " " } else { "" })
}

/// After a value: maybe blanks, maybe a comment, then the line break; sometimes blank and
/// comment lines follow (at any column up to `col`).
fn end_line(g: &mut Gen, col: usize, out: &mut String) {
    // No tab right after a dash: go-yaml refuses it (fixtures/differential/
    // tab-after-sequence-dash.yaml), lockstep does not.
    let blanks: &[&str] = if out.ends_with('-') {
        &[" ", "  "]
    } else {
        &[" ", "  ", "\t"]
    };
    if g.chance(4) {
        out.push_str(g.pick(blanks));
    }
    if g.chance(12) {
        out.push_str(g.pick(blanks));
        out.push_str(&comment_text(g));
    }
    out.push('\n');
    between_lines(g, col, out);
}

/// Blank and comment-only lines between entries.
fn between_lines(g: &mut Gen, col: usize, out: &mut String) {
    if g.chance(6) {
        out.push('\n');
    }
    if g.chance(6) {
        let at = g.below(col + 1);
        indent(out, at);
        out.push_str(&comment_text(g));
        out.push('\n');
    }
}

/// Whether `text` reads as the same string when written plain.
fn plain_ok(text: &str, flow: bool) -> bool {
    const SPECIAL: &[&str] = &[
        "true", "false", "null", "yes", "no", "on", "off", "y", "n", "~", "<<", "=",
    ];
    let Some(first) = text.chars().next() else {
        return false;
    };
    let lower = text.to_ascii_lowercase();
    let digit_start = first.is_ascii_digit() || matches!(first, '+' | '.');
    let plain_dash = first == '-' && text.len() > 1 && !text.starts_with("- ");
    !SPECIAL.contains(&lower.as_str())
        && (!digit_start || WORDS.contains(&text))
        && (!"-?:,[]{}#&*!|>'\"%@`".contains(first) || plain_dash)
        && !text.contains(['\n', '\r', '\t'])
        && !text.contains(": ")
        && !text.contains(" #")
        && !text.ends_with([' ', ':'])
        && !text.starts_with(' ')
        && !text.starts_with("---")
        && !text.starts_with("...")
        && !(flow && text.contains([',', '[', ']', '{', '}']))
        && !(flow && text.contains(":"))
        && !(first == '-' && text.len() == 1)
}

fn single_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn double_quoted(g: &mut Gen, text: &str, escapes: bool) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str(if g.chance(50) { "\\t" } else { "\t" }),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if escapes && g.chance(8) => {
                let n = c as u32;
                if n < 0x80 && g.chance(50) {
                    out.push_str(&format!("\\x{n:02X}"));
                } else if n < 0x10000 && g.chance(70) {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08X}"));
                }
            }
            ' ' if escapes && g.chance(3) => out.push_str("\\ "),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A quoted scalar broken over lines (folded: a line break reads as a space), at `col`.
fn multi_line_quoted(g: &mut Gen, text: &str, col: usize) -> Option<String> {
    if !text.contains(' ') || text.contains(['\n', '\t']) || text.contains("  ") {
        return None;
    }
    let words: Vec<&str> = text.split(' ').collect();
    let cut = 1 + g.below(words.len() - 1);
    let (a, b) = (words[..cut].join(" "), words[cut..].join(" "));
    let mut brk = String::from("\n");
    indent(&mut brk, col + 1 + g.below(3));
    Some(if g.chance(50) && !text.contains(['\'', '\\', '"']) {
        format!("'{a}{brk}{b}'")
    } else if g.chance(50) && !text.contains(['\\', '"']) {
        format!("\"{a}{brk}{b}\"")
    } else if !text.contains(['\\', '"']) {
        // An escaped line break: no space at all... so keep one before the break.
        format!("\"{a} \\{brk}{b}\"")
    } else {
        return None;
    })
}

/// A plain scalar broken over lines, continuation lines at `col + 1` or deeper.
fn multi_line_plain(g: &mut Gen, text: &str, col: usize) -> Option<String> {
    if !text.contains(' ') || text.contains("  ") {
        return None;
    }
    let words: Vec<&str> = text.split(' ').collect();
    if words.iter().skip(1).any(|w| {
        w.starts_with([
            '#', '-', '?', ':', '[', '{', ']', '}', ',', '&', '*', '!', '|', '>', '\'', '"', '%',
            '@', '`',
        ]) || *w == "..."
            || w.starts_with("---")
    }) {
        return None;
    }
    let mut out = String::new();
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            if g.chance(40) {
                out.push('\n');
                if g.chance(15) {
                    out.push('\n'); // an empty line: a line break in the value
                }
                indent(&mut out, col + 1 + g.below(4));
            } else {
                out.push(' ');
            }
        }
        out.push_str(w);
    }
    Some(out)
}

/// A block scalar (`|` or `>`) holding `text`, for a node owned by the key or dash at
/// column `owner`; the content is indented past it.
fn block_scalar(g: &mut Gen, text: &str, owner: usize) -> Option<String> {
    if text.contains('\r') {
        return None;
    }
    let lines: Vec<&str> = text.split('\n').collect();
    let starts_with_space = lines
        .iter()
        .find(|l| !l.is_empty())
        .is_some_and(|l| l.starts_with(' '));
    let step = 1 + g.below(4);
    let explicit = starts_with_space || g.chance(25);
    let style = g.pick(&["|", ">"]);
    let chomp = g.pick(&["", "-", "+"]);
    let mut header = String::from(style);
    if explicit {
        if g.chance(50) {
            header.push_str(&format!("{step}{chomp}"));
        } else {
            header.push_str(&format!("{chomp}{step}"));
        }
    } else {
        header.push_str(chomp);
    }
    if g.chance(15) {
        header.push_str(g.pick(&[" # block", "  #x", "\t# tab"]));
    }
    let mut out = header;
    // Without a trailing line break the last line still ends with one in the file.
    let body = text.strip_suffix('\n').unwrap_or(text);
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            indent(&mut out, owner + step);
        } else if g.chance(30) {
            // Spaces on an empty line, no deeper than the content.
            indent(&mut out, g.below(owner + step + 1));
        }
        out.push_str(line);
    }
    if text.ends_with('\n') {
        // A trailing empty line, which only `|+`/`>+` keep.
        out.push('\n');
    }
    // Content lines must not look like document markers at column 0: never, since
    // owner + step >= 1.
    Some(out)
}

/// A string in block context (after `key: ` or `- `), its key or dash at `owner`.
fn block_string(g: &mut Gen, text: &str, owner: usize) -> (String, bool) {
    let r = g.below(20);
    if r < 9 && plain_ok(text, false) {
        if r < 2
            && let Some(s) = multi_line_plain(g, text, owner)
        {
            return (s, false);
        }
        return (text.to_owned(), false);
    }
    if r < 12 && !text.contains(['\n', '\t']) {
        return (single_quoted(text), false);
    }
    if r == 12
        && let Some(s) = multi_line_quoted(g, text, owner)
    {
        return (s, false);
    }
    if r >= 16
        && let Some(s) = block_scalar(g, text, owner)
    {
        return (s, true);
    }
    (double_quoted(g, text, true), false)
}

fn flow_string(g: &mut Gen, text: &str) -> String {
    match g.below(10) {
        0..=4 if plain_ok(text, true) => text.to_owned(),
        0..=6 if !text.contains(['\n', '\t']) => single_quoted(text),
        _ => double_quoted(g, text, true),
    }
}

fn image_text(g: &mut Gen, image: &str, flow: bool) -> String {
    match g.below(10) {
        0..=5 if !flow || !image.contains(':') || g.chance(70) => image.to_owned(),
        0..=7 => format!("'{image}'"),
        _ => format!("\"{image}\""),
    }
}

fn key_text(g: &mut Gen, key: &str, flow: bool) -> String {
    if key == "<<" {
        return key.to_owned();
    }
    let r = g.below(40);
    let mut out = if r < 34 && plain_ok(key, flow) {
        key.to_owned()
    } else if r < 37 {
        single_quoted(key)
    } else {
        double_quoted(g, key, true)
    };
    if g.chance(3) {
        out.push_str(g.pick(&[" ", "  "]));
    }
    out
}

/// A node in flow context, continuation lines at `col`.
fn render_flow(g: &mut Gen, node: &N, col: usize, out: &mut String) {
    match node {
        N::Str(t) => out.push_str(&flow_string(g, t)),
        N::Image(i) => out.push_str(&image_text(g, i, true)),
        N::Raw(r) => out.push_str(r),
        N::Alias(a) => out.push_str(&format!("*{a}")),
        N::Anchor(a, inner) => {
            out.push_str(&format!("&{a} "));
            render_flow(g, inner, col, out);
        }
        N::Seq(items) => {
            out.push('[');
            if g.chance(10) {
                out.push(' ');
            }
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                    flow_break(g, col, out);
                }
                render_flow(g, item, col + 2, out);
            }
            if !items.is_empty() && g.chance(8) {
                out.push(',');
            }
            if g.chance(8) {
                out.push(' ');
            }
            out.push(']');
        }
        N::Map(entries) => {
            out.push('{');
            if g.chance(10) {
                out.push(' ');
            }
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                    flow_break(g, col, out);
                }
                if g.chance(3) {
                    out.push_str("? ");
                }
                out.push_str(&key_text(g, k, true));
                out.push(':');
                out.push(' ');
                render_flow(g, v, col + 2, out);
            }
            if !entries.is_empty() && g.chance(8) {
                out.push(',');
            }
            if g.chance(10) {
                out.push(' ');
            }
            out.push('}');
        }
    }
}

/// Between flow entries: a space, or a line break (maybe after a comment, maybe with an empty
/// line) and indentation past `col`.
fn flow_break(g: &mut Gen, col: usize, out: &mut String) {
    if g.chance(80) {
        out.push(' ');
        return;
    }
    if g.chance(30) {
        out.push(' ');
        out.push_str(&comment_text(g));
    }
    out.push('\n');
    if g.chance(10) {
        out.push('\n');
    }
    indent(out, col + 1 + g.below(3));
}

fn is_collection(n: &N) -> bool {
    match n {
        N::Map(e) => !e.is_empty(),
        N::Seq(e) => !e.is_empty(),
        N::Anchor(_, inner) => is_collection(inner),
        _ => false,
    }
}

/// The value of an entry whose key (or dash) is at `owner`, written after `key:` or `-`; ends
/// the line(s).
fn render_value(g: &mut Gen, node: &N, owner: usize, seq_item: bool, out: &mut String) {
    let (anchor, inner) = match node {
        N::Anchor(a, inner) => (Some(a.as_str()), &**inner),
        other => (None, other),
    };
    if is_collection(inner) && !g.chance(12) {
        if let Some(a) = anchor {
            out.push_str(&format!(" &{a}"));
        }
        if g.chance(10) {
            out.push(' ');
            out.push_str(&comment_text(g));
        }
        out.push('\n');
        between_lines(g, owner, out);
        let step = *[2, 2, 2, 4, 1, 3].get(g.below(6)).unwrap();
        match inner {
            N::Map(entries) => render_block_map(g, entries, owner + step, false, out),
            N::Seq(items) => {
                // Kubernetes style puts `- ` at the key's column; both are valid (not under a
                // dash, where the items must be deeper).
                let at = if !seq_item && g.chance(50) {
                    owner
                } else {
                    owner + step
                };
                render_block_seq(g, items, at, out)
            }
            _ => unreachable!(),
        }
        return;
    }
    out.push(' ');
    if let Some(a) = anchor {
        out.push_str(&format!("&{a} "));
    }
    match inner {
        N::Str(t) => {
            let (text, block) = block_string(g, t, owner);
            out.push_str(&text);
            if block {
                out.push('\n');
                between_lines(g, owner, out);
                return;
            }
        }
        N::Image(i) => out.push_str(&image_text(g, i, false)),
        N::Raw(r) => {
            // A null may also be written as nothing at all.
            if r.eq_ignore_ascii_case("null") && g.chance(30) && anchor.is_none() {
                out.pop();
            } else {
                out.push_str(r);
            }
        }
        N::Alias(a) => out.push_str(&format!("*{a}")),
        other => render_flow(g, other, owner + 1, out),
    }
    end_line(g, owner, out);
}

fn render_block_map(
    g: &mut Gen,
    entries: &[(String, N)],
    col: usize,
    inline: bool,
    out: &mut String,
) {
    for (i, (k, v)) in entries.iter().enumerate() {
        if i > 0 || !inline {
            indent(out, col);
        }
        if g.chance(3) && k != "<<" {
            // An explicit key.
            out.push_str("? ");
            out.push_str(&key_text(g, k, false));
            out.push('\n');
            indent(out, col);
            out.push(':');
        } else {
            out.push_str(&key_text(g, k, false));
            out.push(':');
        }
        render_value(g, v, col, false, out);
    }
}

fn render_block_seq(g: &mut Gen, items: &[N], col: usize, out: &mut String) {
    for item in items {
        indent(out, col);
        let (anchor, inner) = match item {
            N::Anchor(a, inner) => (Some(a.as_str()), &**inner),
            other => (None, other),
        };
        match inner {
            N::Map(entries) if !entries.is_empty() && anchor.is_none() && !g.chance(10) => {
                // `- key: v`, the other keys under the first.
                let gap = if g.chance(85) { 1 } else { 1 + g.below(3) };
                out.push('-');
                indent(out, gap);
                render_block_map(g, entries, col + 1 + gap, true, out);
            }
            N::Seq(items) if !items.is_empty() && anchor.is_none() && g.chance(50) => {
                // `- - x`: a sequence in a sequence, on the same line.
                out.push_str("- ");
                let mut sub = String::new();
                render_block_seq(g, items, col + 2, &mut sub);
                out.push_str(&sub[col + 2..]);
            }
            _ => {
                out.push('-');
                render_value(g, item, col, true, out);
            }
        }
    }
}

fn yaml_document(g: &mut Gen, node: &N, out: &mut String) {
    match node {
        N::Map(entries) if !entries.is_empty() => render_block_map(g, entries, 0, false, out),
        other => {
            render_flow(g, other, 0, out);
            out.push('\n');
        }
    }
}

fn yaml_file(g: &mut Gen) -> String {
    let mut out = String::new();
    if g.chance(10) {
        out.push_str(&comment_text(g));
        out.push_str("\n\n");
    }
    let docs = 1 + g.below(4);
    for i in 0..docs {
        g.anchors.clear();
        g.plain_model = false;
        if i > 0 || g.chance(40) {
            out.push_str(g.pick(&[
                "---",
                "---",
                "---",
                "--- ",
                "--- # next",
                "---\t",
                "---   #x",
            ]));
            out.push('\n');
        }
        match g.below(30) {
            0 => {} // an empty document
            1 => {
                out.push_str(&comment_text(g));
                out.push('\n');
            }
            2 => {
                // A flow mapping as a document (not first: a `{` first makes it JSON).
                let obj = object(g, true);
                if i == 0 {
                    yaml_document(g, &obj, &mut out);
                } else {
                    render_flow(g, &obj, 0, &mut out);
                    out.push('\n');
                }
            }
            _ => {
                let obj = object(g, true);
                yaml_document(g, &obj, &mut out);
            }
        }
    }
    if g.chance(5) {
        out.push_str("---\n");
    }
    if g.chance(8) {
        out.push_str(&comment_text(g));
        out.push('\n');
    }
    if g.chance(10) && out.ends_with('\n') && !out.ends_with("\n\n") {
        // The file ends without a line break.
        out.pop();
    }
    out
}

// ------------------------------------------------------------------ JSON rendering

/// A JSON spelling of a raw YAML scalar.
fn json_raw(r: &str) -> String {
    match r {
        "~" | "null" | "Null" | "NULL" => "null".into(),
        "true" | "True" | "TRUE" => "true".into(),
        "false" | "False" | "FALSE" => "false".into(),
        _ => {
            let s = r.strip_prefix('+').unwrap_or(r);
            let s = if let Some(rest) = s.strip_prefix("-.") {
                format!("-0.{rest}")
            } else if let Some(rest) = s.strip_prefix('.') {
                format!("0.{rest}")
            } else {
                s.to_owned()
            };

            match s.split_once(['e', 'E']) {
                Some((m, e)) if m.ends_with('.') => format!("{m}0e{e}"),
                _ if s.ends_with('.') => format!("{s}0"),
                _ => s,
            }
        }
    }
}

fn json_string(g: &mut Gen, text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            '/' if g.chance(20) => out.push_str("\\/"),
            c if !c.is_ascii() && g.chance(30) => {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn render_json(g: &mut Gen, node: &N, pretty: Option<usize>, out: &mut String) {
    let nl = |out: &mut String, depth: Option<usize>| {
        if let Some(d) = depth {
            out.push('\n');
            indent(out, d);
        }
    };
    match node {
        N::Str(t) | N::Image(t) => out.push_str(&json_string(g, t)),
        N::Raw(r) => out.push_str(&json_raw(r)),
        N::Anchor(_, inner) => render_json(g, inner, pretty, out),
        N::Alias(_) => out.push_str("null"),
        N::Seq(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                nl(out, pretty.map(|d| d + 2));
                render_json(g, item, pretty.map(|d| d + 2), out);
            }
            if !items.is_empty() {
                nl(out, pretty);
            }
            out.push(']');
        }
        N::Map(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                nl(out, pretty.map(|d| d + 2));
                out.push_str(&json_string(g, k));
                out.push_str(if pretty.is_some() { ": " } else { ":" });
                render_json(g, v, pretty.map(|d| d + 2), out);
            }
            if !entries.is_empty() {
                nl(out, pretty);
            }
            out.push('}');
        }
    }
}

/// A JSON file: one object, or a stream of them (kubectl reads a stream when the file starts
/// with `{`); sometimes followed by YAML documents.
fn json_file(g: &mut Gen, hostile: bool) -> String {
    let mut out = String::new();
    if g.chance(20) {
        out.push_str(g.pick(&["\n", "  ", "\n\n  "]));
    }
    g.plain_model = true;
    let n = if g.chance(70) { 1 } else { 2 + g.below(2) };
    for i in 0..n {
        g.anchors.clear();
        let obj = object(g, true);
        let pretty = if g.chance(60) { Some(0) } else { None };
        if i > 0 {
            out.push_str(g.pick(&["\n", " ", "\n\n", ""]));
        }
        render_json(g, &obj, pretty, &mut out);
    }
    out.push('\n');
    g.plain_model = false;
    if hostile && g.chance(30) {
        // JSON then YAML: kubectl's JSON mode for the whole file.
        out.push_str(g.pick(&["---\n", "", "\n"]));
        let obj = object(g, false);
        yaml_document(g, &obj, &mut out);
    }
    out
}

// ------------------------------------------------------------------ hostile mutations

/// Lines that hold `key: value` (plain key at some indentation), by byte offset.
fn entry_lines(text: &str) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start_matches(' ');
        let ind = line.len() - trimmed.len();
        let trimmed = trimmed.strip_prefix("- ").unwrap_or(trimmed);
        if let Some((k, _)) = trimmed.split_once(": ")
            && !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c))
        {
            out.push((at, ind, k.to_owned()));
        }
        at += line.len();
    }
    out
}

fn insert_line(text: &mut String, at: usize, line: &str) {
    text.insert_str(at, line);
}

fn mutate(g: &mut Gen, mut text: String) -> String {
    let entries = entry_lines(&text);
    let pick_entry = |g: &mut Gen| -> Option<(usize, usize, String)> {
        if entries.is_empty() {
            None
        } else {
            Some(entries[g.below(entries.len())].clone())
        }
    };
    let line_end = |text: &str, at: usize| text[at..].find('\n').map_or(text.len(), |i| at + i + 1);
    match g.below(26) {
        0 | 1 => {
            // A tag before a value or a key.
            if let Some((at, ind, _)) = pick_entry(g) {
                let tag = g.pick(&[
                    "!!str ",
                    "!!int ",
                    "!!binary ",
                    "!local ",
                    "!!map ",
                    "!!null ",
                    "!<tag:yaml.org,2002:str> ",
                    "!!merge ",
                ]);
                if g.chance(50) {
                    let colon = text[at..].find(": ").map(|i| at + i + 2);
                    if let Some(c) = colon {
                        text.insert_str(c, tag);
                    }
                } else {
                    text.insert_str(at + ind, tag);
                }
            }
        }
        2 => {
            // `!!binary` key spelling `image`.
            if let Some((at, ind, _)) = pick_entry(g) {
                let end = line_end(&text, at);
                let mut line = String::new();
                indent(&mut line, ind);
                line.push_str("!!binary aW1hZ2U=: evil:1\n");
                insert_line(&mut text, end, &line);
            }
        }
        3 | 4 => {
            // A Unicode line break somewhere (or in a comment, hiding a line).
            let brk = g.pick(&["\u{85}", "\u{2028}", "\u{2029}"]);
            if g.chance(50) {
                let breaks: Vec<usize> = text.match_indices('\n').map(|(i, _)| i).collect();
                if !breaks.is_empty() {
                    let at = breaks[g.below(breaks.len())];
                    text.replace_range(at..at + 1, brk);
                }
            } else if let Some((at, ind, _)) = pick_entry(g) {
                // Before the line's '\n', or at the end of a last line that has none.
                let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
                let mut hidden = format!(" # c{brk}");
                indent(&mut hidden, ind);
                hidden.push_str("image: evil:1");
                text.insert_str(end, &hidden);
            }
        }
        5 => {
            // A line starting with `---` inside the text (maybe inside a block scalar).
            let marker = g.pick(&[
                "---#x\n", "--- x\n", "---\t#\n", "---\n", "----\n", "--- |\n",
            ]);
            let lines: Vec<usize> = std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .filter(|&i| i == 0 || i < text.len())
                .collect();
            let at = lines[g.below(lines.len())];
            insert_line(&mut text, at, marker);
        }
        6 => {
            let marker = g.pick(&["...\n", "... # end\n", "...\n---\n", "...x\n"]);
            let lines: Vec<usize> = text.match_indices('\n').map(|(i, _)| i + 1).collect();
            let at = if lines.is_empty() {
                text.len()
            } else {
                lines[g.below(lines.len())]
            };
            insert_line(&mut text, at, marker);
        }
        7 => {
            // An alias as a key.
            if let Some((at, ind, key)) = pick_entry(g) {
                text.insert_str(0, &format!("k: &k {key}\n---\n"));
                let at = at + format!("k: &k {key}\n---\n").len();
                let end = line_end(&text, at);
                let mut line = String::new();
                indent(&mut line, ind);
                line.push_str("*k : evil:1\n");
                insert_line(&mut text, end, &line);
            }
        }
        8 | 9 => {
            // A merge that overlaps a key of the mapping (before or after it).
            if let Some((at, ind, key)) = pick_entry(g) {
                let mut line = String::new();
                indent(&mut line, ind);
                line.push_str(&format!("<<: {{{key}: evil:1}}\n"));
                let at = if g.chance(50) {
                    line_end(&text, at)
                } else {
                    at
                };
                insert_line(&mut text, at, &line);
            }
        }
        10 => {
            // A quoted or tagged merge key.
            if let Some((at, ind, _)) = pick_entry(g) {
                let mut line = String::new();
                indent(&mut line, ind);
                line.push_str(g.pick(&[
                    "'<<': {image: evil:1}\n",
                    "!!merge <<: {zz: 1}\n",
                    "\"<<\": {zz: 1}\n",
                ]));
                let end = line_end(&text, at);
                insert_line(&mut text, end, &line);
            }
        }
        11 | 12 => {
            // A duplicate key.
            if let Some((at, _, _)) = pick_entry(g) {
                let end = line_end(&text, at);
                let line = text[at..end].to_owned();
                let line = if g.chance(50) {
                    line
                } else {
                    line.replacen(": ", ": evil:1 #", 1)
                };
                let line = line.replacen("- ", "  ", 1);
                insert_line(&mut text, end, &line);
            }
        }
        13 | 14 => {
            // A tab as (part of) indentation, or after a colon.
            if let Some((at, ind, _)) = pick_entry(g) {
                if g.chance(50) && ind > 0 {
                    text.replace_range(at..at + 1, "\t");
                } else if let Some(i) = text[at..].find(": ") {
                    text.replace_range(at + i + 1..at + i + 2, "\t");
                }
            }
        }
        15 | 16 => {
            // A plain value YAML 1.1 and 1.2 read differently (or JSON cannot carry).
            if let Some((at, _, _)) = pick_entry(g) {
                let end = line_end(&text, at);
                if let Some(i) = text[at..end].find(": ") {
                    let v = g.pick(AMBIGUOUS);
                    let stop = text[at + i + 2..end]
                        .find(" #")
                        .map_or(end, |j| at + i + 2 + j);
                    let stop = if text[..stop].ends_with('\n') {
                        stop - 1
                    } else {
                        stop
                    };
                    if at + i + 2 <= stop {
                        text.replace_range(at + i + 2..stop, v);
                    }
                }
            }
        }
        17 => {
            let d = g.pick(&[
                "%YAML 1.1\n---\n",
                "%TAG ! tag:example.com,2000:\n---\n",
                "%FOO bar\n---\n",
            ]);
            text.insert_str(0, d);
        }
        18 => {
            // Lone CRs, or a BOM later in the file.
            if g.chance(50) {
                text = text.replace('\n', "\r");
            } else {
                let lines: Vec<usize> = text.match_indices('\n').map(|(i, _)| i + 1).collect();
                if !lines.is_empty() {
                    let at = lines[g.below(lines.len())];
                    text.insert(at, '\u{feff}');
                }
            }
        }
        19 => {
            // A very long key.
            if let Some((at, ind, _)) = pick_entry(g) {
                let mut line = String::new();
                indent(&mut line, ind);
                let n = g.pick(&["1000", "1030", "2000"]).parse().unwrap();
                line.push_str(&"k".repeat(n));
                line.push_str(": v\n");
                let end = line_end(&text, at);
                insert_line(&mut text, end, &line);
            }
        }
        20 => {
            // A control character, or a Helm template.
            let what = g.pick(&[
                "\u{7}",
                "\u{0}",
                "{{ .Values.image }}",
                "\u{1b}[0m",
                "\u{fffe}",
            ]);
            if let Some((at, _, _)) = pick_entry(g) {
                let mut end = (line_end(&text, at) - 1).min(text.len());
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.insert_str(end, what);
            }
        }
        21 => {
            // An image behind an anchor or in a block scalar.
            if let Some(i) = text.find("image: ") {
                let at = i + "image: ".len();
                let what = g.pick(&["&img ", "|\n          ", ">-\n          ", "!!str "]);
                text.insert_str(at, what);
            }
        }
        22 => {
            // A complex key.
            if let Some((at, ind, _)) = pick_entry(g) {
                let mut line = String::new();
                indent(&mut line, ind);
                line.push_str(g.pick(&["? [a, b]\n", "? {image: x}\n", "? - a\n"]));
                indent(&mut line, ind);
                line.push_str(": evil:1\n");
                let end = line_end(&text, at);
                insert_line(&mut text, end, &line);
            }
        }
        23 => {
            // `items` outside a List, or a List in a List, or the kind changed.
            text = match g.below(3) {
                0 => text.replacen("kind: List", "kind: Foo", 1),
                1 => text.replacen("kind: Deployment", "kind: List", 1),
                _ => text.replacen("apiVersion: ", "apiVersionX: ", 1),
            };
        }
        24 => {
            // Flow sequence closed at the parent's column (istio style).
            if let Some(i) = text.find("args: [")
                && let Some(j) = text[i..].find(']')
            {
                let line_start = text[..i].rfind('\n').map_or(0, |s| s + 1);
                let col = i - line_start;
                let mut s = String::from("\n");
                indent(&mut s, col);
                text.insert_str(i + j, &s);
            }
        }
        _ => {
            // A random byte-level edit: delete, duplicate or swap a character.
            if !text.is_empty() {
                let mut at = g.below(text.len());
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                let c = text[at..].chars().next().unwrap();
                match g.below(3) {
                    0 => {
                        text.remove(at);
                    }
                    1 => text.insert(at, c),
                    _ => text.insert(
                        at,
                        *[' ', ':', '-', '#', '"', '\'', '\n', '|', '{', '[']
                            .get(g.below(10))
                            .unwrap(),
                    ),
                }
            }
        }
    }
    text
}
