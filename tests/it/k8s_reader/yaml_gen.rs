//! A generator of Kubernetes-shaped YAML that exercises every YAML feature the readers could
//! disagree on: scalar styles (plain, single, double with escapes, literal and folded with
//! chomping/indentation indicators), tags (`!!str`, `!!int`, `!!binary`, `!local`), anchors,
//! aliases, merges (`<<`, `!!merge '<<'`, before and after explicit keys), complex keys
//! (`? `), flow and block collections (and flow `]` at the parent's column), comments
//! everywhere (holding NEL/LS/PS and a second `image:`), document markers (`---`, `...`,
//! `---#x`), line breaks (LF, CRLF, CR, NEL, LS, PS), BOMs, tabs, and YAML 1.1/1.2
//! spellings of numbers, booleans, nulls and timestamps.
//!
//! Deterministic from a byte string (`Gen::new`), so proptest (a seed) and a cargo-fuzz
//! target (the fuzzer's bytes) can share it: `generate(&mut Gen) -> Vec<u8>`.

/// The source of every choice: a splitmix64 stream seeded from bytes.
pub struct Gen {
    state: u64,
    depth: usize,
    anchors: Vec<(String, bool)>,
    next_anchor: usize,
}

impl Gen {
    pub fn new(seed: &[u8]) -> Gen {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for &b in seed {
            state = (state ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        Gen {
            state,
            depth: 0,
            anchors: Vec::new(),
            next_anchor: 0,
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
        (self.next() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn any_anchor(&mut self) -> String {
        let i = self.below(self.anchors.len());
        self.anchors[i].0.clone()
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// One input file: one to three documents of Kubernetes shape, rendered with random styles.
pub fn generate(g: &mut Gen) -> Vec<u8> {
    let mut out = String::new();
    if g.chance(5) {
        out.push('\u{feff}');
    }
    let docs = 1 + g.below(3);
    for i in 0..docs {
        g.anchors.clear();
        if i > 0 || g.chance(30) {
            let marker = match g.below(12) {
                0 => "--- # next\n",
                1 => "---#x\n",
                2 => "---\u{feff}\n",
                3 => "...\n---\n",
                4 => "--- \n",
                _ => "---\n",
            };
            out.push_str(marker);
        }
        let doc = document(g);
        render_block_map(g, &doc, 0, &mut out);
        if g.chance(5) {
            out.push_str(g.pick(&["...\n", "# trailing comment\n", "\n", "---\n"]));
        }
    }
    line_breaks(g, out).into_bytes()
}

/// A node of the document before rendering.
#[derive(Clone, Debug)]
enum Node {
    Scalar(String),
    Map(Vec<(Key, Node)>),
    Seq(Vec<Node>),
}

#[derive(Clone, Debug)]
enum Key {
    Plain(String),
    /// A `<<` merge key (how it is spelled is chosen when rendering).
    Merge,
}

fn s(text: &str) -> Node {
    Node::Scalar(text.to_owned())
}

fn map(entries: Vec<(&str, Node)>) -> Node {
    Node::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Key::Plain(k.to_owned()), v))
            .collect(),
    )
}

const IMAGES: &[&str] = &[
    "nginx:1.25",
    "reg.example/app:1.4",
    "busybox",
    "ghcr.io/acme/api@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "evil:1",
    "registry.example:5000/team/worker:v2",
    "localhost/x:latest",
];

/// Values whose meaning differs between YAML 1.1, YAML 1.2 and JSON.
const TRICKY: &[&str] = &[
    "yes",
    "no",
    "on",
    "off",
    "y",
    "n",
    "Y",
    "N",
    "True",
    "FALSE",
    "~",
    "null",
    "Null",
    "",
    "0755",
    "0x1F",
    "0o17",
    "0b101",
    "1_000",
    "1e3",
    "1.0",
    ".5",
    "-0",
    "+12",
    "1:20",
    "2024-01-01",
    "2024-01-01T10:00:00Z",
    "2001-12-14 21:59:43.10 -5",
    "9007199254740993",
    "123456789012345678901234567890",
    "18446744073709551615",
    ".inf",
    "-.Inf",
    ".nan",
    "1e400",
    "08",
    "3.14159265358979323846",
    "a: b",
    "a #b",
    "#x",
    "'q'",
    "\"dq\"",
    " lead",
    "trail ",
    "é",
    "x\u{2028}y",
    "x\u{85}y",
    "tab\there",
    "line1\nline2",
    "line1\nline2\n",
    "\n",
    "-",
    "?",
    "*",
    "&",
    "!",
    "%",
    "@",
    "`",
    "{",
    "[",
    "]",
    ",",
    "|",
    ">",
    "image",
    "kind",
    "<<",
];

fn value(g: &mut Gen) -> Node {
    match g.below(10) {
        0..=3 => s(g.pick(TRICKY)),
        4 => s(g.pick(IMAGES)),
        5 => s(&g.below(100_000).to_string()),
        6 if g.depth < 3 => {
            g.depth += 1;
            let n = g.below(3);
            let v = Node::Seq((0..n).map(|_| value(g)).collect());
            g.depth -= 1;
            v
        }
        7 if g.depth < 3 => {
            g.depth += 1;
            let n = g.below(3);
            let v = Node::Map(
                (0..n)
                    .map(|_| (Key::Plain(g.pick(TRICKY).to_owned()), value(g)))
                    .collect(),
            );
            g.depth -= 1;
            v
        }
        _ => s(g.pick(&["web", "app", "value with spaces", "a-b_c.d", "ünïcode"])),
    }
}

fn container(g: &mut Gen, i: usize) -> Node {
    let mut entries = vec![
        (Key::Plain("name".into()), s(&format!("c{i}"))),
        (Key::Plain("image".into()), s(g.pick(IMAGES))),
    ];
    if g.chance(30) {
        entries.push((
            Key::Plain("args".into()),
            Node::Seq((0..g.below(3)).map(|_| value(g)).collect()),
        ));
    }
    if g.chance(20) {
        let env = Node::Seq(vec![map(vec![("name", s("X")), ("value", value(g))])]);
        entries.push((Key::Plain("env".into()), env));
    }
    if g.chance(10) {
        entries.push((Key::Merge, map(vec![("image", s(g.pick(IMAGES)))])));
    }
    if g.chance(10) {
        entries.push((
            Key::Plain(g.pick(&["image", "name", "y", "on"]).into()),
            value(g),
        ));
    }
    let n = entries.len();
    if g.chance(20) {
        entries.swap(g.below(n), g.below(n));
    }
    Node::Map(entries)
}

fn pod_spec(g: &mut Gen) -> Node {
    let mut entries = Vec::new();
    for field in ["initContainers", "containers", "ephemeralContainers"] {
        if field == "containers" || g.chance(15) {
            let n = usize::from(field == "containers") + g.below(2);
            let list = (0..n).map(|i| container(g, i)).collect();
            entries.push((field, Node::Seq(list)));
        }
    }
    if g.chance(10) {
        let vol = map(vec![
            ("name", s("v")),
            ("image", map(vec![("reference", s(g.pick(IMAGES)))])),
        ]);
        entries.push(("volumes", Node::Seq(vec![vol])));
    }
    if g.chance(10) {
        entries.push(("restartPolicy", value(g)));
    }
    map(entries)
}

fn metadata(g: &mut Gen, name: &str) -> Node {
    let mut entries = vec![("name", s(name))];
    if g.chance(20) {
        entries.push(("namespace", s(g.pick(&["prod", "default", "y", "0755"]))));
    }
    if g.chance(20) {
        entries.push(("labels", map(vec![("app", value(g))])));
    }
    if g.chance(15) {
        entries.push(("annotations", map(vec![("note", value(g))])));
    }
    map(entries)
}

fn object(g: &mut Gen, depth: usize) -> Node {
    let name = format!("o{}", g.below(100));
    let (api, kind) = match g.below(if depth == 0 { 10 } else { 8 }) {
        0 | 1 => ("apps/v1", "Deployment"),
        2 => ("v1", "Pod"),
        3 => ("batch/v1", "CronJob"),
        4 => ("v1", "ConfigMap"),
        5 => ("apps/v1", "StatefulSet"),
        6 => ("argoproj.io/v1alpha1", "Rollout"),
        7 => ("cache.example.com/v1", "ImageCache"),
        8 => ("v1", "List"),
        _ => ("example.com/v1", "Foo"),
    };
    let mut entries = vec![
        ("apiVersion", s(api)),
        ("kind", s(kind)),
        ("metadata", metadata(g, &name)),
    ];
    let template = |g: &mut Gen| map(vec![("spec", pod_spec(g))]);
    match kind {
        "Pod" => entries.push(("spec", pod_spec(g))),
        "Deployment" | "StatefulSet" | "Rollout" => entries.push((
            "spec",
            map(vec![("replicas", value(g)), ("template", template(g))]),
        )),
        "CronJob" => {
            let job = map(vec![("spec", map(vec![("template", template(g))]))]);
            entries.push((
                "spec",
                map(vec![("schedule", s("0 * * * *")), ("jobTemplate", job)]),
            ));
        }
        "ConfigMap" => {
            let data = (0..g.below(4))
                .map(|_| (Key::Plain(g.pick(TRICKY).to_owned()), value(g)))
                .collect();
            entries.push(("data", Node::Map(data)));
        }
        "ImageCache" => entries.push((
            "spec",
            map(vec![
                ("image", s(g.pick(IMAGES))),
                (
                    "sidecars",
                    Node::Seq(vec![map(vec![("image", s(g.pick(IMAGES)))])]),
                ),
            ]),
        )),
        _ => {
            let items = (0..1 + g.below(2)).map(|_| object(g, depth + 1)).collect();
            entries.push(("items", Node::Seq(items)));
        }
    }
    if g.chance(5) {
        // Drop apiVersion or kind: kubectl refuses, lockstep skips with a notice.
        entries.remove(g.below(2));
    }
    if g.chance(5) {
        entries.push((g.pick(&["kind", "apiVersion", "metadata"]), value(g)));
    }
    map(entries)
}

fn document(g: &mut Gen) -> Node {
    if g.chance(4) {
        return map(vec![("just", s("data"))]);
    }
    object(g, 0)
}

// ------------------------------------------------------------------ rendering

fn indent(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push(' ');
    }
}

fn comment(g: &mut Gen) -> String {
    let brk = g.pick(&["\u{2028}", "\u{2029}", "\u{85}", "", "", "\t"]);
    let tail = g.pick(&["image: evil:1", "x", " kind: Secret", "- evil:2", ""]);
    format!("# c{brk}{tail}")
}

/// A scalar in one of the styles that can hold it, maybe tagged and anchored, for a
/// position at `col` (block scalars continue at `col + 2`).
fn scalar(g: &mut Gen, text: &str, col: usize, flow: bool, key: bool) -> String {
    let mut prefix = String::new();
    if g.chance(4) {
        prefix.push_str(g.pick(&["!!str ", "!local ", "!!int ", "!!float ", "!!bool "]));
    }
    if !key && g.chance(5) {
        let name = format!("a{}", g.next_anchor);
        g.next_anchor += 1;
        g.anchors.push((name.clone(), false));
        prefix.push_str(&format!("&{name} "));
    }
    let plain_ok = !text.is_empty()
        && !text.contains(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'])
        && !text.contains(": ")
        && !text.contains(" #")
        && !text.starts_with(|c: char| c.is_whitespace() || "-?:,[]{}#&*!|>'\"%@`".contains(c))
        && !text.ends_with([' ', ':'])
        && !(flow && text.contains([',', '[', ']', '{', '}']));
    let style = g.below(10);
    let body = if plain_ok && style < 5 {
        text.to_owned()
    } else if style < 7 && !text.contains(['\n', '\r']) {
        format!("'{}'", text.replace('\'', "''"))
    } else if !flow && !key && style >= 8 {
        block_scalar(g, text, col)
    } else {
        double_quoted(g, text)
    };
    format!("{prefix}{body}")
}

fn double_quoted(g: &mut Gen, text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' if g.chance(50) => out.push_str("\\t"),
            '\u{85}' => out.push_str("\\N"),
            '\u{2028}' => out.push_str(if g.chance(50) { "\\L" } else { "\u{2028}" }),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            'é' if g.chance(50) => out.push_str("\\u00e9"),
            'a' if g.chance(10) => out.push_str("\\x61"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn block_scalar(g: &mut Gen, text: &str, col: usize) -> String {
    let header = g.pick(&["|", "|-", "|+", ">", ">-", ">+", "|2", "|2-", ">2"]);
    let extra = if header.contains('2') { 0 } else { g.below(2) };
    let mut out = String::from(header);
    if g.chance(10) {
        out.push_str(" # block");
    }
    out.push('\n');
    for line in text.split('\n') {
        if !line.is_empty() {
            indent(&mut out, col + 2 + extra);
        }
        out.push_str(line);
        out.push('\n');
    }
    if g.chance(10) {
        out.push_str("---#x\n");
    }
    out.pop();
    out
}

fn key_text(g: &mut Gen, key: &Key, col: usize, flow: bool) -> String {
    match key {
        Key::Merge => g
            .pick(&["<<", "!!merge '<<'", "!!merge <<", "\"<<\""])
            .to_owned(),
        Key::Plain(k) => {
            if g.chance(3)
                && let Some(name) = g.anchors.iter().rev().find(|a| !a.1).map(|a| a.0.clone())
            {
                return format!("*{name} ");
            }
            if g.chance(3) {
                return format!("!!binary {}", base64(k.as_bytes()));
            }
            if !flow && g.chance(3) {
                let name = format!("a{}", g.next_anchor);
                g.next_anchor += 1;
                g.anchors.push((name.clone(), false));
                return format!("&{name} {}", scalar(g, k, col, flow, true));
            }
            scalar(g, k, col, flow, true)
        }
    }
}

fn render_flow(g: &mut Gen, node: &Node, col: usize, out: &mut String) {
    match node {
        Node::Scalar(t) => {
            if g.chance(5) && !g.anchors.is_empty() {
                let name = g.any_anchor();
                out.push_str(&format!("*{name}"));
            } else {
                out.push_str(&scalar(g, t, col, true, false));
            }
        }
        Node::Seq(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(if g.chance(20) { ",\n" } else { ", " });
                    if out.ends_with('\n') {
                        indent(out, col + 2);
                    }
                }
                render_flow(g, item, col + 2, out);
            }
            if g.chance(10) {
                // istio style: the closing bracket on its own line at the parent's column
                out.push('\n');
                indent(out, col);
            }
            out.push(']');
        }
        Node::Map(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                if g.chance(5) {
                    out.push_str("? ");
                }
                out.push_str(&key_text(g, k, col, true));
                out.push_str(": ");
                render_flow(g, v, col + 2, out);
            }
            if g.chance(10) {
                out.push(' ');
            }
            out.push('}');
        }
    }
}

/// A value after `key:` (or `- `) in block context at column `col`.
fn render_value(g: &mut Gen, node: &Node, col: usize, out: &mut String) {
    let empty = match node {
        Node::Scalar(_) => false,
        Node::Seq(v) => v.is_empty(),
        Node::Map(v) => v.is_empty(),
    };
    if !g.anchors.is_empty() && g.chance(4) {
        let name = g.any_anchor();
        out.push_str(&format!(" *{name}"));
        trailer(g, out);
        return;
    }
    if empty || matches!(node, Node::Scalar(_)) || g.chance(15) {
        out.push(if g.chance(3) { '\t' } else { ' ' });
        if matches!(node, Node::Map(_) | Node::Seq(_)) && g.chance(5) {
            let name = format!("a{}", g.next_anchor);
            g.next_anchor += 1;
            g.anchors.push((name.clone(), true));
            out.push_str(&format!("&{name} "));
        }
        render_flow(g, node, col, out);
        trailer(g, out);
        return;
    }
    if g.chance(5) {
        let name = format!("a{}", g.next_anchor);
        g.next_anchor += 1;
        g.anchors.push((name.clone(), true));
        out.push_str(&format!(" &{name}"));
    }
    trailer(g, out);
    match node {
        Node::Map(_) => render_block_map(g, node, col + 2, out),
        // Kubernetes style puts `- ` at the key's column; both are valid.
        Node::Seq(_) => {
            let at = col + 2 * g.below(2);
            render_block_seq(g, node, at, out)
        }
        Node::Scalar(_) => unreachable!(),
    }
}

fn trailer(g: &mut Gen, out: &mut String) {
    if g.chance(8) {
        out.push_str("  ");
        out.push_str(&comment(g));
    }
    out.push('\n');
    if g.chance(3) {
        out.push_str(&comment(g));
        out.push('\n');
    }
}

fn render_block_map(g: &mut Gen, node: &Node, col: usize, out: &mut String) {
    let Node::Map(entries) = node else {
        indent(out, col);
        render_flow(g, node, col, out);
        out.push('\n');
        return;
    };
    if entries.is_empty() {
        indent(out, col);
        out.push_str("{}\n");
        return;
    }
    for (k, v) in entries {
        render_entry(g, k, v, col, out);
    }
}

fn render_entry(g: &mut Gen, k: &Key, v: &Node, col: usize, out: &mut String) {
    indent(out, col);
    if g.chance(3) {
        // complex key
        out.push_str("? ");
        out.push_str(&key_text(g, k, col + 2, false));
        out.push('\n');
        indent(out, col);
        out.push(':');
    } else {
        out.push_str(&key_text(g, k, col, false));
        out.push(':');
    }
    render_value(g, v, col, out);
}

fn render_block_seq(g: &mut Gen, node: &Node, col: usize, out: &mut String) {
    let Node::Seq(items) = node else {
        unreachable!()
    };
    for item in items {
        match item {
            Node::Map(entries) if !entries.is_empty() && !g.chance(10) => {
                // `- key: v` then the rest at col + 2: render at col + 2 and put the dash in
                // the first line's indentation.
                let mut sub = String::new();
                render_block_map(g, item, col + 2, &mut sub);
                let mut line = String::new();
                indent(&mut line, col);
                line.push_str("- ");
                out.push_str(&line);
                out.push_str(&sub[col + 2..]);
            }
            _ => {
                indent(out, col);
                out.push('-');
                render_value(g, item, col, out);
            }
        }
    }
}

/// The file's line breaks: mostly LF, sometimes CRLF or CR throughout, sometimes one break
/// replaced by NEL, LS or PS.
fn line_breaks(g: &mut Gen, text: String) -> String {
    let mut text = match g.below(20) {
        0 | 1 => text.replace('\n', "\r\n"),
        2 => text.replace('\n', "\r"),
        _ => text,
    };
    if g.chance(5) {
        let breaks: Vec<usize> = text.match_indices('\n').map(|(i, _)| i).collect();
        if !breaks.is_empty() {
            let at = breaks[g.below(breaks.len())];
            let with = g.pick(&["\u{85}", "\u{2028}", "\u{2029}"]);
            text.replace_range(at..at + 1, with);
        }
    }
    text
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
