//! Owns: reading the deployment files under `deploy/` for `tests/deploy_manifests.rs` — the
//! metric names a PromQL expression (or a Grafana variable query) selects, the metric families
//! of an exposition, the `kaskade <subcommand> --flag …` invocations in manifests and unit
//! files, `KASKADE_*` names, a clap `--help` text, and walking parsed YAML/JSON for queries and
//! command arrays. Pure text and `serde_json::Value` work: no processes, no files.

use serde_json::Value;
use std::collections::BTreeSet;

/// The subcommands of the `kaskade` binary whose invocations are checked.
pub const SUBCOMMANDS: [&str; 4] = ["node", "drain", "certs", "accounts"];

/// Series Prometheus makes itself (not exposed by a node).
pub const PROMETHEUS_OWN_SERIES: [&str; 3] = ["up", "ALERTS", "ALERTS_FOR_STATE"];

/// PromQL words that never name a metric: aggregations, binary operators, modifiers.
const PROMQL_KEYWORDS: [&str; 25] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "atan2",
];

/// Keywords followed by a parenthesised list of label names (not metrics).
const LABEL_LIST_KEYWORDS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Metric names selected by a PromQL expression. Grafana variables (`$site`,
/// `$__rate_interval`, `${node}`) are skipped, and `label_values(selector, label)` yields the
/// selector's metric only.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    collect_metric_names(expr, &mut names);
    names
}

fn collect_metric_names(expr: &str, names: &mut BTreeSet<String>) {
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_string(&chars, i),
            '{' => i = skip_balanced(&chars, i, '{', '}'),
            '[' => i = skip_balanced(&chars, i, '[', ']'),
            '$' => {
                i += 1;
                if chars.get(i) == Some(&'{') {
                    i = skip_balanced(&chars, i, '{', '}');
                } else {
                    while i < chars.len() && is_ident_char(chars[i]) {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                // Numbers and durations (0.99, 5m, 1e-6).
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric()
                        || chars[i] == '.'
                        || ((chars[i] == '-' || chars[i] == '+')
                            && matches!(chars[i - 1], 'e' | 'E')))
                {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let opens = chars.get(next) == Some(&'(');
                if LABEL_LIST_KEYWORDS.contains(&word.as_str()) {
                    if opens {
                        i = skip_balanced(&chars, next, '(', ')');
                    }
                } else if word == "label_values" && opens {
                    let end = skip_balanced(&chars, next, '(', ')');
                    let inner: String = chars[next + 1..end.saturating_sub(1)].iter().collect();
                    if let Some((selector, _label)) = split_last_top_level_comma(&inner) {
                        collect_metric_names(selector, names);
                    }
                    i = end;
                } else if opens
                    || PROMQL_KEYWORDS.contains(&word.as_str())
                    || matches!(word.to_ascii_lowercase().as_str(), "inf" | "nan")
                {
                    // A function call, an aggregation or an operator.
                } else {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Index just past the string literal starting at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    chars.len()
}

/// Index just past the bracket that closes the one at `start`, honouring strings.
fn skip_balanced(chars: &[char], start: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_string(chars, i);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    chars.len()
}

/// `a{x=","}, b` → `("a{x=\",\"}", " b")`: the last comma outside brackets and strings.
fn split_last_top_level_comma(s: &str) -> Option<(&str, &str)> {
    let mut depth = 0i32;
    let mut in_string: Option<char> = None;
    let mut last = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if let Some(q) = in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                c if c == q => in_string = None,
                _ => {}
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => in_string = Some(c),
            '(' | '{' | '[' => depth += 1,
            ')' | '}' | ']' => depth -= 1,
            ',' if depth == 0 => last = Some(i),
            _ => {}
        }
    }
    last.map(|i| (&s[..i], &s[i + 1..]))
}

/// Family names of an exposition's `# TYPE <family> <type>` lines.
pub fn families(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The family a sample name belongs to: itself, or with a `_total`, `_bucket`, `_sum`,
/// `_count`, `_created` or `_info` suffix taken off.
pub fn family_of<'a>(name: &str, families: &'a BTreeSet<String>) -> Option<&'a str> {
    if let Some(f) = families.get(name) {
        return Some(f);
    }
    ["_total", "_bucket", "_sum", "_count", "_created", "_info"]
        .iter()
        .filter_map(|suffix| name.strip_suffix(suffix))
        .find_map(|base| families.get(base))
        .map(String::as_str)
}

/// One `kaskade <subcommand> …` found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// `node`, `drain`, `certs` or `accounts`.
    pub subcommand: String,
    /// The `--flags` given (without `=value`), in order.
    pub flags: Vec<String>,
    /// The invocation as written, for messages.
    pub text: String,
}

/// Every `kaskade <subcommand> …` (also `/usr/local/bin/kaskade`, `target/release/kaskade`) in
/// a text file — commands, unit lines and comments alike. Lines ending in `\` continue on the
/// next (a leading `#` there is a comment continuing); a shell separator ends the invocation.
pub fn invocations_in_text(text: &str) -> Vec<Invocation> {
    let mut out = Vec::new();
    for line in logical_lines(text) {
        let tokens: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        for (i, raw) in tokens.iter().enumerate() {
            let token = clean_token(raw);
            let is_binary = token == "kaskade" || token.ends_with("/kaskade");
            if is_binary && let Some(inv) = invocation_from_tokens(&tokens[i + 1..]) {
                out.push(inv);
            }
        }
    }
    out
}

/// An argument vector whose first element is a subcommand (a container's `args`/`command`
/// under the image's `kaskade` entrypoint); `None` otherwise.
pub fn invocation_from_args(args: &[String]) -> Option<Invocation> {
    invocation_from_tokens(args)
}

fn invocation_from_tokens(tokens: &[String]) -> Option<Invocation> {
    let sub = clean_token(tokens.first()?);
    if !SUBCOMMANDS.contains(&sub.as_str()) {
        return None;
    }
    let mut flags = Vec::new();
    let mut words = vec![format!("kaskade {sub}")];
    let rest = if ends_code_span(&tokens[0]) {
        &[][..]
    } else {
        &tokens[1..]
    };
    for raw in rest {
        let token = clean_token(raw);
        if matches!(token.as_str(), "|" | "||" | "&&" | ";" | "#" | ">" | "2>&1") {
            break;
        }
        words.push(token.clone());
        if let Some(flag) = token.strip_prefix("--") {
            let name = flag.split('=').next().unwrap_or(flag);
            if !name.is_empty() {
                flags.push(format!("--{name}"));
            }
        }
        if ends_code_span(raw) {
            break;
        }
    }
    Some(Invocation {
        subcommand: sub,
        flags,
        text: words.join(" "),
    })
}

/// The end of an inline code span in prose: `kaskade drain --node X` (then words).
fn ends_code_span(raw: &str) -> bool {
    raw.trim_end_matches(['.', ',', ';', ':', ')'])
        .ends_with('`')
}

/// A token without the quotes, backticks, brackets and commas around it.
fn clean_token(token: &str) -> String {
    token
        .trim_matches(|c: char| {
            matches!(
                c,
                '"' | '\'' | '`' | '[' | ']' | ',' | '(' | ')' | '.' | ':' | ';'
            )
        })
        .to_owned()
}

/// Lines with `\`-continuations joined.
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for raw in text.lines() {
        let piece = if current.is_empty() {
            raw.trim()
        } else {
            raw.trim().trim_start_matches('#').trim()
        };
        if let Some(body) = piece.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
        } else {
            current.push_str(piece);
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Every `KASKADE_…` name in a text.
pub fn env_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("KASKADE_") {
        let preceded_by_ident = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..len];
        if !preceded_by_ident && name.len() > "KASKADE_".len() && !name.ends_with('_') {
            out.insert(name.to_owned());
        }
        rest = &tail[len.max(1)..];
    }
    out
}

/// What a clap `--help` text offers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Help {
    /// `--long` flags, `--help` included.
    pub flags: BTreeSet<String>,
    /// Names in `[env: NAME=…]`.
    pub envs: BTreeSet<String>,
    /// The "Commands:" section's names (`help` left out).
    pub subcommands: Vec<String>,
}

pub fn parse_help(text: &str) -> Help {
    let mut help = Help::default();
    let mut in_commands = false;
    for line in text.lines() {
        if line.trim_end() == "Commands:" {
            in_commands = true;
            continue;
        }
        if in_commands {
            if line.trim().is_empty() || !line.starts_with("  ") {
                in_commands = false;
            } else if let Some(name) = line.split_whitespace().next()
                && line.starts_with("  ")
                && !line.starts_with("   ")
                && name != "help"
            {
                help.subcommands.push(name.to_owned());
            }
        }
        // `  -h, --help`: a short flag before the long one.
        let trimmed = line.trim_start();
        let bytes = trimmed.as_bytes();
        let option = if bytes.len() > 4
            && bytes[0] == b'-'
            && bytes[1].is_ascii_alphanumeric()
            && trimmed[2..].starts_with(", ")
        {
            &trimmed[4..]
        } else {
            trimmed
        };
        if let Some(long) = option.strip_prefix("--") {
            let name: String = long
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if !name.is_empty() {
                help.flags.insert(format!("--{name}"));
            }
        }
        let mut rest = line;
        while let Some(at) = rest.find("[env: ") {
            let tail = &rest[at + "[env: ".len()..];
            let name: String = tail
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if !name.is_empty() {
                help.envs.insert(name);
            }
            rest = tail;
        }
    }
    help
}

/// Every PromQL query of a Grafana dashboard: `(panel title, expr)` for each target of each
/// panel (rows' nested panels included) and `("$name", query)` for each query variable.
pub fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("(untitled)").to_owned();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((title.clone(), expr.to_owned()));
                }
            }
            panels(&panel["panels"], out);
        }
    }
    panels(&dashboard["panels"], &mut out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] != "query" {
            continue;
        }
        let query = match &var["query"] {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("query").and_then(Value::as_str).map(str::to_owned),
            _ => None,
        };
        if let Some(q) = query {
            let name = var["name"].as_str().unwrap_or("?");
            out.push((format!("${name}"), q));
        }
    }
    out
}

/// `(rule name, expr)` of every alerting and recording rule of a Prometheus rule file.
pub fn rule_exprs(rules: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for group in rules["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            let name = rule["alert"]
                .as_str()
                .or_else(|| rule["record"].as_str())
                .unwrap_or("?");
            if let Some(expr) = rule["expr"].as_str() {
                out.push((name.to_owned(), expr.to_owned()));
            }
        }
    }
    out
}

/// Every array of strings held under one of `keys` anywhere in `value` (containers' `args` and
/// `command`, Compose's `command`).
pub fn string_arrays_under(value: &Value, keys: &[&str]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    fn walk(v: &Value, keys: &[&str], out: &mut Vec<Vec<String>>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    if keys.contains(&k.as_str())
                        && let Some(items) = child.as_array()
                    {
                        let strings: Vec<String> = items
                            .iter()
                            .filter_map(|i| i.as_str().map(str::to_owned))
                            .collect();
                        if strings.len() == items.len() {
                            out.push(strings);
                        }
                    }
                    walk(child, keys, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, keys, out)),
            _ => {}
        }
    }
    walk(value, keys, &mut out);
    out
}

/// Seconds of a systemd / Compose / Prometheus duration: `45s`, `1m30s`, `2min`, `90`.
pub fn duration_secs(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Ok(n) = s.parse() {
        return Some(n);
    }
    let mut total = 0;
    let mut digits = String::new();
    let mut unit = String::new();
    let mut flush = |digits: &mut String, unit: &mut String| -> Option<()> {
        let n: u64 = digits.parse().ok()?;
        let factor = match unit.as_str() {
            "s" | "sec" => 1,
            "m" | "min" => 60,
            "h" => 3600,
            _ => return None,
        };
        total += n * factor;
        digits.clear();
        unit.clear();
        Some(())
    };
    for c in s.chars() {
        if c.is_ascii_digit() {
            if !unit.is_empty() {
                flush(&mut digits, &mut unit)?;
            }
            digits.push(c);
        } else if c.is_ascii_alphabetic() {
            unit.push(c);
        } else {
            return None;
        }
    }
    flush(&mut digits, &mut unit)?;
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        metric_names(expr).into_iter().collect()
    }

    #[test]
    fn finds_the_metrics_of_promql_expressions() {
        assert_eq!(
            names(
                r#"histogram_quantile(0.99, sum by (node, le) (rate(kaskade_forward_latency_seconds_bucket{site=~"$site", node=~"$node"}[$__rate_interval])))"#
            ),
            ["kaskade_forward_latency_seconds_bucket"]
        );
        assert_eq!(
            names(
                "kaskade_control_plane_lease_held == 0 unless on (instance) kaskade_control_plane_reachable == 0"
            ),
            [
                "kaskade_control_plane_lease_held",
                "kaskade_control_plane_reachable"
            ]
        );
        assert_eq!(
            names(r#"count(ALERTS{alertstate="firing", alertname=~"Kaskade.*"}) or vector(0)"#),
            ["ALERTS"]
        );
        assert_eq!(
            names("rate(process_cpu_seconds_total[5m]) / kaskade_cpu_cores > 0.85"),
            ["kaskade_cpu_cores", "process_cpu_seconds_total"]
        );
        assert_eq!(
            names(
                "max by (site) (kaskade_mesh_live_nodes) == 0 or sum by (site) (up{job=\"kaskade\"}) == 0"
            ),
            ["kaskade_mesh_live_nodes", "up"]
        );
        assert_eq!(
            names("sum(x{a=\"}{\"}) offset 5m * 1e-3 + time() - y @ start()"),
            ["x", "y"]
        );
        assert_eq!(
            names(r#"label_values(kaskade_node_info{site=~"$site"}, node)"#),
            ["kaskade_node_info"]
        );
        assert_eq!(names("label_values(site)"), Vec::<String>::new());
        assert_eq!(names("${node} + Inf"), Vec::<String>::new());
    }

    #[test]
    fn maps_sample_names_to_families() {
        let f = families(
            "# HELP kaskade_nacks NACKs.\n# TYPE kaskade_nacks counter\nkaskade_nacks_total 0\n\
             # TYPE kaskade_forward_latency_seconds histogram\n# TYPE kaskade_node_info gauge\n# EOF\n",
        );
        assert_eq!(family_of("kaskade_nacks_total", &f), Some("kaskade_nacks"));
        assert_eq!(
            family_of("kaskade_forward_latency_seconds_bucket", &f),
            Some("kaskade_forward_latency_seconds")
        );
        assert_eq!(
            family_of("kaskade_node_info", &f),
            Some("kaskade_node_info")
        );
        assert_eq!(family_of("kaskade_nacks_sent_total", &f), None);
        assert_eq!(family_of("kaskade_rooms", &f), None);
    }

    #[test]
    fn finds_invocations_in_units_comments_and_shell_strings() {
        let text = "ExecStart=/usr/local/bin/kaskade node --site a \\\n    --metrics-token=x\n\
                    # later: `kaskade drain --node ID` from anywhere\n\
                    #   docker compose exec -T n1 kaskade accounts create-user --tenant s \\\n\
                    #       --role host\n\
                    sh -c 'kaskade drain --node \"$N\" --etcd \"$E\" || true --bogus'\n\
                    cargo build -p kaskade-node --release\n\
                    1. `kaskade drain --node b1 --url http://x/` (then the --prose continues).\n\
                    (`kaskade drain`, SIGTERM --not-a-flag)\n";
        let found = invocations_in_text(text);
        let flags: Vec<(&str, Vec<&str>)> = found
            .iter()
            .map(|i| {
                (
                    i.subcommand.as_str(),
                    i.flags.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            flags,
            [
                ("node", vec!["--site", "--metrics-token"]),
                ("drain", vec!["--node"]),
                ("accounts", vec!["--tenant", "--role"]),
                ("drain", vec!["--node", "--etcd"]),
                ("drain", vec!["--node", "--url"]),
                ("drain", vec![]),
            ]
        );
        let args: Vec<String> = ["certs", "--out", "/certs", "n1"].map(String::from).into();
        assert_eq!(invocation_from_args(&args).unwrap().flags, ["--out"]);
        assert_eq!(invocation_from_args(&["--config.file=x".to_owned()]), None);
    }

    #[test]
    fn finds_env_names() {
        let got: Vec<String> = env_names(
            "KASKADE_NODE_ID=n1\n- name: KASKADE_ETCD\n${KASKADE_ADMIN_TOKEN:?put KASKADE_ADMIN_TOKEN=x} MY_KASKADE_X KASKADE_",
        )
        .into_iter()
        .collect();
        assert_eq!(
            got,
            ["KASKADE_ADMIN_TOKEN", "KASKADE_ETCD", "KASKADE_NODE_ID"]
        );
    }

    #[test]
    fn parses_clap_help() {
        let help = parse_help(
            "Usage: kaskade <COMMAND>\n\nCommands:\n  node      Run one node\n  certs     Make\n            certificates\n  help      Print\n\n\
             Options:\n      --http <HTTP>\n          listen [env: KASKADE_HTTP=]\n  -h, --help\n          Print help\n      \
             --etcd-prefix <P>  prefix [env: KASKADE_ETCD_PREFIX=] [default: /kaskade/]\n      \
             --out <OUT>  Directory for ca.pem, ca.key and more\n",
        );
        assert_eq!(help.subcommands, ["node", "certs"]);
        assert_eq!(
            help.flags.iter().map(String::as_str).collect::<Vec<_>>(),
            ["--etcd-prefix", "--help", "--http", "--out"]
        );
        assert_eq!(
            help.envs.iter().map(String::as_str).collect::<Vec<_>>(),
            ["KASKADE_ETCD_PREFIX", "KASKADE_HTTP"]
        );
    }

    #[test]
    fn parses_durations() {
        assert_eq!(duration_secs("45s"), Some(45));
        assert_eq!(duration_secs("1m30s"), Some(90));
        assert_eq!(duration_secs("2min"), Some(120));
        assert_eq!(duration_secs("60"), Some(60));
        assert_eq!(duration_secs("soon"), None);
    }
}
