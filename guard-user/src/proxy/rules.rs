//! Rule catalogues: which intercepted HTTP requests are delete-like and wait for a human, and the
//! one line the human reads about each.
//!
//! A catalogue is data (`profiles/rules/NAME.toml`; the schema is documented at the top of
//! `cloud-deletes.toml`): an ordered list of rules, each made of request conditions (method, host
//! and path templates, the AWS SigV4 service, `X-Amz-Target`, S3 addressing, query and form
//! parameters, values in a JSON or XML body, GraphQL mutations), a description template, and
//! examples and near misses that are checked when the file is loaded. The first rule that
//! matches wins.
//!
//! Names and values are compared ignoring ASCII case: a request that differs from a held one only
//! in case is held too (failing closed costs a click, failing open can cost a database).

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashSet};
use std::ops::Range;

use globset::{GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

/// The catalogues compiled into the binary, by name.
const BUILTIN: &[(&str, &str)] = &[(
    "cloud-deletes",
    include_str!("../../../profiles/rules/cloud-deletes.toml"),
)];

/// Virtual-hosted S3 endpoints (`BUCKET.s3.amazonaws.com`), added to a catalogue's own
/// `s3_virtual_hosts`. Any other host is taken as path-style (`HOST/BUCKET/KEY`).
const S3_VIRTUAL_HOSTS: &[&str] = &[
    "{bucket}.s3.{domain}",
    "{bucket}.s3-{domain}",
    "{bucket}.s3express-{domain}",
    "{bucket}.storage.googleapis.com",
    "{bucket}.{region}.digitaloceanspaces.com",
    "{bucket}.{account}.r2.cloudflarestorage.com",
];

/// Headers that tunnel another method through a POST.
const METHOD_OVERRIDES: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Values shown per placeholder before "and N more".
const MAX_VALUES: usize = 5;
/// Characters shown per value.
const MAX_VALUE_CHARS: usize = 120;
/// Characters in a whole description.
const MAX_DESCRIPTION_CHARS: usize = 400;
/// Nesting followed in GraphQL values.
const MAX_GRAPHQL_DEPTH: usize = 32;

// ---------------------------------------------------------------------------------------------
// The public interface.

/// A request as the classifier sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The method in upper case (`POST`).
    pub method: &'a str,
    /// The host in lower case, without the port.
    pub host: &'a str,
    /// The path as sent (percent-encoded); begins with `/`.
    pub path: &'a str,
    /// The raw query string, without the `?`.
    pub query: Option<&'a str>,
    /// The request headers.
    pub headers: &'a http::HeaderMap,
    /// The whole body, or empty when it was not read.
    pub body: &'a [u8],
}

/// The rule a request matched, and what it does in one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// The rule's id (`aws-ec2-delete`).
    pub rule: String,
    /// The rule's description with the request's values filled in
    /// (`EC2 TerminateInstances: i-0abc, i-0def`).
    pub description: String,
}

/// An ordered set of rules; the first that matches a request wins.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    rules: Vec<Rule>,
    /// Virtual-hosted S3 endpoints: the built-in ones and the catalogues' `s3_virtual_hosts`.
    s3_hosts: Vec<HostPattern>,
}

impl Catalogue {
    /// The text of a catalogue shipped with the binary (`profiles/rules/NAME.toml`).
    pub fn builtin(name: &str) -> Option<&'static str> {
        BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }

    /// Parses one catalogue file. `name` is how errors name the file; each error reads
    /// `NAME:LINE:COLUMN: KEY: message`. Unknown keys are errors, and so is a rule without
    /// examples or near misses, an example that the file's rules do not classify as that rule
    /// (or with another description than the one it states), and a near miss that any of the
    /// file's rules matches.
    pub fn parse(name: &str, text: &str) -> Result<Catalogue, String> {
        parse_catalogue(text, true).map_err(|(at, msg)| locate(name, text, at.start, &msg))
    }

    /// Parses a built-in catalogue without running its examples and near misses (the unit tests
    /// run them; at session start they would cost tens of milliseconds).
    pub fn parse_builtin(name: &str) -> Option<Result<Catalogue, String>> {
        let text = Catalogue::builtin(name)?;
        Some(
            parse_catalogue(text, false)
                .map_err(|(at, msg)| locate(&format!("built-in {name}"), text, at.start, &msg)),
        )
    }

    /// Adds another catalogue's rules after this one's. A rule whose id is already present
    /// replaces the earlier rule in its position (so a user's catalogue can redefine a built-in
    /// rule without changing which rules come first).
    pub fn extend(&mut self, other: Catalogue) {
        for h in other.s3_hosts {
            if !self.s3_hosts.iter().any(|x| x.text == h.text) {
                self.s3_hosts.push(h);
            }
        }
        for r in other.rules {
            match self.rules.iter_mut().find(|x| x.id == r.id) {
                Some(x) => *x = r,
                None => self.rules.push(r),
            }
        }
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether classifying this request needs its body (`req.body` is ignored). True when a rule
    /// could match only depending on the body, or matches and names resources found in it.
    /// Looks at the method, host, path, query and headers only. A proxy that cannot read a body
    /// it needs (too large) must not forward the request unclassified.
    pub fn needs_body(&self, req: &Request) -> bool {
        if self.is_empty() {
            return false;
        }
        let cx = Cx::new(req, &self.s3_hosts, false);
        for rule in &self.rules {
            let mut vars = Vars::new();
            match rule.eval(&cx, &mut vars) {
                Tri::No => {}
                Tri::Maybe => return true,
                // The first match decides; the body matters only for its description.
                Tri::Yes => return rule.reads_body(&cx),
            }
        }
        false
    }

    /// The first rule that matches, with its description filled in; `None` when no rule does.
    pub fn classify(&self, req: &Request) -> Option<Match> {
        if self.is_empty() {
            return None;
        }
        let cx = Cx::new(req, &self.s3_hosts, true);
        self.rules.iter().find_map(|r| r.try_match(&cx))
    }
}

/// The AWS SigV4 service and region of a signed request, in lower case: from the credential scope
/// of the `Authorization` header (`Credential=AKID/20260101/us-east-1/s3/aws4_request`) or of the
/// `X-Amz-Credential` query parameter (presigned URLs). SigV4A scopes have no region: it is taken
/// from `X-Amz-Region-Set`, else `*`.
pub fn aws_scope(req: &Request) -> Option<(String, String)> {
    let region_set = || {
        req.headers
            .get("x-amz-region-set")
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|s| !s.is_empty())
    };
    for v in req.headers.get_all(http::header::AUTHORIZATION) {
        let v = String::from_utf8_lossy(v.as_bytes());
        let Some((alg, rest)) = v.trim_start().split_once(char::is_whitespace) else {
            continue;
        };
        let v4a = if alg.eq_ignore_ascii_case("AWS4-HMAC-SHA256") {
            false
        } else if alg.eq_ignore_ascii_case("AWS4-ECDSA-P256-SHA256") {
            true
        } else {
            continue;
        };
        let cred = rest.split(',').map(str::trim).find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("Credential")
                .then_some(v.trim())
        });
        if let Some(s) = cred.and_then(|c| credential_scope(c, v4a, region_set)) {
            return Some(s);
        }
    }
    let q = parse_pairs(req.query?.as_bytes(), true);
    let param = |name: &str| {
        q.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let cred = param("X-Amz-Credential")?;
    let v4a = param("X-Amz-Algorithm")
        .is_some_and(|a| a.eq_ignore_ascii_case("AWS4-ECDSA-P256-SHA256"))
        || cred.split('/').count() == 4;
    credential_scope(cred, v4a, || {
        param("X-Amz-Region-Set").map(str::to_ascii_lowercase)
    })
}

/// The response a denied (or timed-out) held request gets: status 403, a content type, and a body
/// that says the sandbox policy held and denied it, with the hold id and `why` (the rule's
/// description). Shaped for the client: AWS Query (`ErrorResponse` XML), AWS JSON
/// (`X-Amz-Target`: `__type` JSON), S3 and other REST-XML AWS services (`Error` XML), other AWS
/// REST services (`__type` JSON), Google APIs and Azure (their `error` object), and anything
/// else `{"error":"held_denied","message":...}` (with Kubernetes `Status` fields on Kubernetes
/// API paths, so kubectl prints the message).
pub fn denied_response(req: &Request, hold_id: &str, why: &str) -> (u16, &'static str, String) {
    const STATUS: u16 = 403;
    let message = format!("held by the sandbox policy and denied: {why} (hold {hold_id})");
    let cx = Cx::new(req, &[], true);
    if cx.target().is_some() {
        let ctype = match req.headers.get(http::header::CONTENT_TYPE) {
            Some(v) if v.as_bytes().ends_with(b"1.1") => "application/x-amz-json-1.1",
            _ => "application/x-amz-json-1.0",
        };
        let body = serde_json::json!({"__type": "AccessDeniedException", "message": message});
        return (STATUS, ctype, body.to_string());
    }
    if let Some(service) = cx.service() {
        let text = xml_escape(&message);
        let id = xml_escape(hold_id);
        if matches!(service, "s3" | "s3express" | "s3-object-lambda") {
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>\
                 <Message>{text}</Message><RequestId>{id}</RequestId></Error>"
            );
            return (STATUS, "application/xml", body);
        }
        let query_protocol = cx
            .query()
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("Action"))
            || cx
                .form()
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("Action"));
        if query_protocol || matches!(service, "route53" | "cloudfront") {
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse><Error><Type>Sender</Type>\
                 <Code>AccessDenied</Code><Message>{text}</Message></Error>\
                 <RequestId>{id}</RequestId></ErrorResponse>"
            );
            return (STATUS, "text/xml", body);
        }
        let body = serde_json::json!({"__type": "AccessDeniedException", "message": message});
        return (STATUS, "application/json", body.to_string());
    }
    let host = cx.host;
    if host == "googleapis.com" || host.ends_with(".googleapis.com") {
        let body = serde_json::json!({"error": {
            "code": STATUS, "message": message, "status": "PERMISSION_DENIED"
        }});
        return (STATUS, "application/json", body.to_string());
    }
    if AZURE_ARM_HOSTS.contains(&host) {
        let body = serde_json::json!({"error": {"code": "held_denied", "message": message}});
        return (STATUS, "application/json", body.to_string());
    }
    let mut body = serde_json::json!({"error": "held_denied", "message": message, "hold": hold_id});
    let p = req.path;
    let kubernetes = ["/api", "/apis"]
        .iter()
        .any(|r| p == *r || p.strip_prefix(r).is_some_and(|t| t.starts_with('/')));
    if let (true, Some(o)) = (kubernetes, body.as_object_mut()) {
        o.insert("kind".into(), "Status".into());
        o.insert("apiVersion".into(), "v1".into());
        o.insert("metadata".into(), serde_json::json!({}));
        o.insert("status".into(), "Failure".into());
        o.insert("reason".into(), "Forbidden".into());
        o.insert("code".into(), STATUS.into());
    }
    (STATUS, "application/json", body.to_string())
}

/// Azure Resource Manager endpoints (public, US government and China clouds).
const AZURE_ARM_HOSTS: &[&str] = &[
    "management.azure.com",
    "management.usgovcloudapi.net",
    "management.chinacloudapi.cn",
];

// ---------------------------------------------------------------------------------------------
// The file format, as written. Values keep their spans for error messages.

type Str = Spanned<String>;
type Table = BTreeMap<Str, Vec<Str>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalogue {
    #[serde(default)]
    s3_virtual_hosts: Vec<Str>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

/// Declares a table type with the request conditions as fields, plus its own fields. (serde's
/// `flatten` cannot be combined with `deny_unknown_fields`.)
macro_rules! conditions_table {
    ($(#[$attr:meta])* struct $name:ident { $($(#[$fattr:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$attr])*
        struct $name {
            $($(#[$fattr])* $field: $ty,)*
            #[serde(default)]
            method: Vec<Str>,
            #[serde(default)]
            host: Vec<Str>,
            #[serde(default)]
            path: Vec<Str>,
            #[serde(default)]
            aws_service: Vec<Str>,
            #[serde(default)]
            aws_target: Vec<Str>,
            #[serde(default)]
            s3: Option<Str>,
            #[serde(default)]
            params: Table,
            #[serde(default)]
            json: Table,
            #[serde(default)]
            xml: Table,
            #[serde(default)]
            graphql: Vec<Str>,
            #[serde(default)]
            vars: Table,
        }

        impl $name {
            fn conditions(&self) -> RawConds<'_> {
                RawConds {
                    method: &self.method,
                    host: &self.host,
                    path: &self.path,
                    aws_service: &self.aws_service,
                    aws_target: &self.aws_target,
                    s3: self.s3.as_ref(),
                    params: &self.params,
                    json: &self.json,
                    xml: &self.xml,
                    graphql: &self.graphql,
                    vars: &self.vars,
                }
            }
        }
    };
}

conditions_table! {
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawRule {
        id: Str,
        description: Str,
        #[serde(default)]
        resources: Vec<Str>,
        #[serde(default)]
        details: Vec<Str>,
        #[serde(default)]
        unless: Vec<Spanned<RawUnless>>,
        #[serde(default)]
        examples: Vec<Spanned<RawExample>>,
        #[serde(default)]
        near_misses: Vec<Spanned<RawExample>>,
    }
}

conditions_table! {
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawUnless {}
}

/// The conditions of a rule or of one of its `unless` tables.
struct RawConds<'a> {
    method: &'a [Str],
    host: &'a [Str],
    path: &'a [Str],
    aws_service: &'a [Str],
    aws_target: &'a [Str],
    s3: Option<&'a Str>,
    params: &'a Table,
    json: &'a Table,
    xml: &'a Table,
    graphql: &'a [Str],
    vars: &'a Table,
}

/// A test request: `request = "METHOD URL"`, optional `headers`, `sign = "SERVICE[/REGION]"`
/// (adds a SigV4 `Authorization` header), `form` (a form-encoded body) or `body`, and for
/// examples the expected `description`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExample {
    request: Str,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    sign: Option<Str>,
    #[serde(default)]
    form: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    description: Option<Str>,
}

// ---------------------------------------------------------------------------------------------
// Compiled rules.

#[derive(Debug, Clone)]
struct Rule {
    id: String,
    template: Vec<Piece>,
    resources: Vec<Source>,
    details: Vec<Source>,
    when: Conds,
    unless: Vec<Conds>,
    /// The description reads form parameters (from a form body).
    reads_form: bool,
    /// The description reads a JSON, XML or GraphQL body.
    reads_other: bool,
    examples: Vec<Example>,
    near_misses: Vec<Example>,
}

/// Conditions; all that are given must hold.
#[derive(Debug, Clone, Default)]
struct Conds {
    method: Vec<String>,
    host: Vec<HostPattern>,
    path: Vec<PathPattern>,
    aws_service: Option<GlobSet>,
    aws_target: Option<GlobSet>,
    s3: Option<S3Kind>,
    params: Vec<(GlobMatcher, GlobSet)>,
    json: Vec<(Pointer, GlobSet)>,
    xml: Vec<(String, GlobSet)>,
    graphql: Option<GlobSet>,
    vars: Vec<(String, GlobSet)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum S3Kind {
    /// The service itself, no bucket named (`DELETE /` on a path-style endpoint).
    Root,
    Bucket,
    Object,
}

/// A three-valued outcome: `Maybe` when the answer depends on a body not read yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tri {
    No,
    Maybe,
    Yes,
}

impl Tri {
    fn and(self, other: Tri) -> Tri {
        match (self, other) {
            (Tri::No, _) | (_, Tri::No) => Tri::No,
            (Tri::Maybe, _) | (_, Tri::Maybe) => Tri::Maybe,
            _ => Tri::Yes,
        }
    }
}

/// Named values captured by host and path templates (and `bucket`, `key` for S3).
type Vars = Vec<(String, String)>;

fn var<'v>(vars: &'v Vars, name: &str) -> Option<&'v str> {
    vars.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

impl Rule {
    fn eval(&self, cx: &Cx, vars: &mut Vars) -> Tri {
        let mut t = self.when.eval(cx, vars);
        if t == Tri::No {
            return Tri::No;
        }
        for u in &self.unless {
            let mut scratch = vars.clone();
            match u.eval(cx, &mut scratch) {
                Tri::Yes => return Tri::No,
                Tri::Maybe => t = Tri::Maybe,
                Tri::No => {}
            }
        }
        t
    }

    fn try_match(&self, cx: &Cx) -> Option<Match> {
        let mut vars = Vars::new();
        (self.eval(cx, &mut vars) == Tri::Yes).then(|| Match {
            rule: self.id.clone(),
            description: self.describe(cx, &vars),
        })
    }

    fn reads_body(&self, cx: &Cx) -> bool {
        (self.reads_form && cx.form_possible()) || (self.reads_other && cx.body_possible())
    }

    fn describe(&self, cx: &Cx, vars: &Vars) -> String {
        let mut out = String::new();
        for p in &self.template {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Source(s) => {
                    let v = s.values(cx, vars);
                    if v.is_empty() {
                        out.push('?');
                    } else {
                        out.push_str(&join_values(v));
                    }
                }
            }
        }
        let resources: Vec<String> = self
            .resources
            .iter()
            .flat_map(|s| s.values(cx, vars))
            .collect();
        if !resources.is_empty() {
            out.push_str(": ");
            out.push_str(&join_values(resources));
        }
        let details: Vec<String> = self
            .details
            .iter()
            .filter_map(|s| {
                let v = s.values(cx, vars);
                (!v.is_empty()).then(|| format!("{}={}", s.label(), join_values(v)))
            })
            .collect();
        if !details.is_empty() {
            out.push_str(" (");
            out.push_str(&details.join(", "));
            out.push(')');
        }
        truncate(&clean(&out), MAX_DESCRIPTION_CHARS)
    }
}

impl Conds {
    fn is_empty(&self) -> bool {
        self.method.is_empty()
            && self.host.is_empty()
            && self.path.is_empty()
            && self.aws_service.is_none()
            && self.aws_target.is_none()
            && self.s3.is_none()
            && self.params.is_empty()
            && self.json.is_empty()
            && self.xml.is_empty()
            && self.graphql.is_none()
            && self.vars.is_empty()
    }

    /// Evaluates the conditions, cheapest first; captures go to `vars`.
    fn eval(&self, cx: &Cx, vars: &mut Vars) -> Tri {
        if !self.method.is_empty() && !cx.method_is(&self.method) {
            return Tri::No;
        }
        if !self.host.is_empty() && !self.host.iter().any(|h| h.matches(cx.host, vars)) {
            return Tri::No;
        }
        if !self.path.is_empty() {
            let (raw, clean) = cx.segments();
            let found = self.path.iter().any(|p| {
                p.matches(raw, vars) || clean.as_ref().is_some_and(|c| p.matches(c, vars))
            });
            if !found {
                return Tri::No;
            }
        }
        if let Some(g) = &self.aws_service {
            if !cx.service().is_some_and(|s| g.is_match(s)) {
                return Tri::No;
            }
        }
        if let Some(g) = &self.aws_target {
            if !cx.target().is_some_and(|t| g.is_match(t)) {
                return Tri::No;
            }
        }
        if let Some(kind) = self.s3 {
            let Some(a) = cx.s3() else { return Tri::No };
            if a.kind() != kind {
                return Tri::No;
            }
            if let Some(b) = &a.bucket {
                vars.push(("bucket".into(), b.clone()));
            }
            if let Some(k) = &a.key {
                vars.push(("key".into(), k.clone()));
            }
        }
        for (name, g) in &self.vars {
            if !var(vars, name).is_some_and(|v| g.is_match(v)) {
                return Tri::No;
            }
        }
        let mut t = Tri::Yes;
        for (name, values) in &self.params {
            let hit = |pairs: &[(String, String)]| {
                pairs
                    .iter()
                    .any(|(k, v)| name.is_match(k) && values.is_match(v))
            };
            t = t.and(if hit(cx.query()) {
                Tri::Yes
            } else if !cx.body_known {
                if cx.form_possible() {
                    Tri::Maybe
                } else {
                    Tri::No
                }
            } else if hit(cx.form()) {
                Tri::Yes
            } else {
                Tri::No
            });
            if t == Tri::No {
                return t;
            }
        }
        let body_conds = !self.json.is_empty() || !self.xml.is_empty() || self.graphql.is_some();
        if body_conds && !cx.body_known {
            return t.and(if cx.body_possible() {
                Tri::Maybe
            } else {
                Tri::No
            });
        }
        for (ptr, g) in &self.json {
            let found = cx.json().is_some_and(|j| {
                let mut hits = Vec::new();
                ptr.select(j, &mut hits);
                let mut texts = Vec::new();
                hits.iter().for_each(|h| json_texts(h, true, &mut texts));
                texts.iter().any(|s| g.is_match(s))
            });
            if !found {
                return Tri::No;
            }
        }
        for (name, g) in &self.xml {
            let found = cx.xml().iter().any(|e| {
                e.name.eq_ignore_ascii_case(name) && e.text.as_ref().is_some_and(|s| g.is_match(s))
            });
            if !found {
                return Tri::No;
            }
        }
        if let Some(g) = &self.graphql {
            if !cx.graphql().iter().any(|f| g.is_match(&f.name)) {
                return Tri::No;
            }
        }
        t
    }
}

// ---------------------------------------------------------------------------------------------
// Description templates.

#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Source(Source),
}

/// Where a description takes values from.
#[derive(Debug, Clone)]
enum Source {
    /// `param:GLOB`: query and form parameters whose name matches.
    Param {
        name: GlobMatcher,
        label: String,
    },
    /// `json:POINTER`: values in the JSON body (pointer segments may be globs).
    Json(Pointer),
    /// `json-keys:POINTER`: member names of the objects there.
    JsonKeys(Pointer),
    /// `xml:NAME`: text of the XML body's elements with that local name.
    Xml(String),
    /// `header:NAME`.
    Header(http::HeaderName),
    /// `count:SOURCE`: how many values (elements, for `xml:`).
    Count(Box<Source>),
    /// A capture of a host or path template, or `bucket` / `key` of S3 addressing.
    Var(String),
    Builtin(Builtin),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Builtin {
    Method,
    Host,
    Path,
    Url,
    Service,
    Region,
    Target,
    Mutation,
}

const BUILTINS: &[(&str, Builtin)] = &[
    ("method", Builtin::Method),
    ("host", Builtin::Host),
    ("path", Builtin::Path),
    ("url", Builtin::Url),
    ("service", Builtin::Service),
    ("region", Builtin::Region),
    ("target", Builtin::Target),
    ("mutation", Builtin::Mutation),
];

impl Source {
    fn parse(s: &str, vars: &HashSet<String>) -> Result<Source, String> {
        let s = s.trim();
        let Some((kind, arg)) = s.split_once(':') else {
            if let Some((_, b)) = BUILTINS.iter().find(|(n, _)| *n == s) {
                return Ok(Source::Builtin(*b));
            }
            if vars.contains(s) {
                return Ok(Source::Var(s.to_string()));
            }
            let mut known: Vec<&str> = BUILTINS.iter().map(|(n, _)| *n).collect();
            known.extend(vars.iter().map(String::as_str));
            return Err(format!(
                "unknown value `{s}`: expected param:GLOB, json:POINTER, json-keys:POINTER, \
                 xml:NAME, header:NAME, count:..., or one of {}",
                known.join(", ")
            ));
        };
        match kind {
            "param" => Ok(Source::Param {
                name: glob(arg)?,
                label: arg.to_string(),
            }),
            "json" => Ok(Source::Json(Pointer::parse(arg)?)),
            "json-keys" => Ok(Source::JsonKeys(Pointer::parse(arg)?)),
            "xml" if !arg.is_empty() => Ok(Source::Xml(arg.to_string())),
            "header" => http::HeaderName::from_bytes(arg.as_bytes())
                .map(Source::Header)
                .map_err(|_| format!("not a header name: {arg:?}")),
            "count" => Ok(Source::Count(Box::new(Source::parse(arg, vars)?))),
            _ => Err(format!("unknown kind of value `{kind}:` in `{s}`")),
        }
    }

    fn label(&self) -> String {
        match self {
            Source::Param { label, .. } => label.clone(),
            Source::Json(p) | Source::JsonKeys(p) => p.label(),
            Source::Xml(n) | Source::Var(n) => n.clone(),
            Source::Header(h) => h.as_str().to_string(),
            Source::Count(s) => format!("count of {}", s.label()),
            Source::Builtin(b) => BUILTINS
                .iter()
                .find(|(_, x)| x == b)
                .map_or_else(String::new, |(n, _)| (*n).to_string()),
        }
    }

    /// Whether the values come from a form body, from another kind of body.
    fn reads(&self) -> (bool, bool) {
        match self {
            Source::Param { .. } => (true, false),
            Source::Json(_) | Source::JsonKeys(_) | Source::Xml(_) => (false, true),
            Source::Builtin(Builtin::Mutation) => (false, true),
            Source::Count(s) => s.reads(),
            _ => (false, false),
        }
    }

    fn values(&self, cx: &Cx, vars: &Vars) -> Vec<String> {
        let mut out = Vec::new();
        match self {
            Source::Param { name, .. } => {
                for (k, v) in cx.query().iter().chain(cx.form()) {
                    if name.is_match(k) && !v.is_empty() {
                        out.push(v.clone());
                    }
                }
            }
            Source::Json(p) => {
                if let Some(j) = cx.json() {
                    let mut hits = Vec::new();
                    p.select(j, &mut hits);
                    hits.iter().for_each(|h| json_texts(h, false, &mut out));
                }
            }
            Source::JsonKeys(p) => {
                if let Some(j) = cx.json() {
                    let mut hits = Vec::new();
                    p.select(j, &mut hits);
                    for h in hits {
                        if let Value::Object(m) = h {
                            out.extend(m.keys().cloned());
                        }
                    }
                }
            }
            Source::Xml(n) => {
                for e in cx.xml() {
                    if let (true, Some(t)) = (e.name.eq_ignore_ascii_case(n), &e.text) {
                        if !t.is_empty() {
                            out.push(t.clone());
                        }
                    }
                }
            }
            Source::Header(h) => {
                for v in cx.req.headers.get_all(h) {
                    out.push(String::from_utf8_lossy(v.as_bytes()).into_owned());
                }
            }
            Source::Count(s) => {
                let n = match s.as_ref() {
                    Source::Xml(n) => cx
                        .xml()
                        .iter()
                        .filter(|e| e.name.eq_ignore_ascii_case(n))
                        .count(),
                    s => s.values(cx, vars).len(),
                };
                out.push(n.to_string());
            }
            Source::Var(n) => out.extend(var(vars, n).map(str::to_string)),
            Source::Builtin(b) => match b {
                Builtin::Method => out.push(cx.req.method.to_string()),
                Builtin::Host => out.push(cx.host.to_string()),
                Builtin::Path => out.push(percent_decode(cx.req.path.as_bytes(), false)),
                Builtin::Url => out.push(format!(
                    "{}{}",
                    cx.host,
                    percent_decode(cx.req.path.as_bytes(), false)
                )),
                Builtin::Service => out.extend(cx.service().map(str::to_string)),
                Builtin::Region => {
                    out.extend(cx.scope().map(|(_, r)| r.clone()).filter(|r| !r.is_empty()))
                }
                Builtin::Target => out.extend(
                    cx.target()
                        .map(|t| t.rsplit('.').next().unwrap_or(t).to_string()),
                ),
                Builtin::Mutation => out.extend(cx.graphql().iter().map(GqlField::render)),
            },
        }
        out
    }
}

fn parse_template(s: &str, vars: &HashSet<String>) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                lit.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                lit.push('}');
            }
            '{' => {
                let mut src = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => src.push(c),
                        None => {
                            return Err(format!(
                                "unclosed `{{` in {s:?} (write `{{{{` for a brace)"
                            ))
                        }
                    }
                }
                if !lit.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut lit)));
                }
                pieces.push(Piece::Source(Source::parse(&src, vars)?));
            }
            '}' => {
                return Err(format!(
                    "unmatched `}}` in {s:?} (write `}}}}` for a brace)"
                ))
            }
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        pieces.push(Piece::Text(lit));
    }
    Ok(pieces)
}

/// Removes control and bidirectional-override characters (a value is shown on one line and must
/// not rewrite what the human sees) and shortens long values.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            let hidden = matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}');
            if c.is_control() || hidden {
                ' '
            } else {
                c
            }
        })
        .collect()
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Distinct values, cleaned, at most `MAX_VALUES` of them.
fn join_values(values: Vec<String>) -> String {
    let mut seen = HashSet::new();
    let distinct: Vec<String> = values
        .into_iter()
        .filter(|v| seen.insert(v.clone()))
        .collect();
    let shown: Vec<String> = distinct
        .iter()
        .take(MAX_VALUES)
        .map(|v| truncate(&clean(v), MAX_VALUE_CHARS))
        .collect();
    let mut s = shown.join(", ");
    if distinct.len() > MAX_VALUES {
        s.push_str(&format!(" and {} more", distinct.len() - MAX_VALUES));
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Host and path templates: literal text, `*` (any text), `{name}` (captured, at least one
// character); in paths each applies within one segment, and a whole segment may be `**` (any
// number of segments) or `{name+}` (one or more segments, captured joined with `/`).

#[derive(Debug, Clone)]
enum Pat {
    Lit(Vec<u8>),
    Star,
    Cap(String),
}

fn parse_pats(s: &str, names: &mut Vec<String>) -> Result<Vec<Pat>, String> {
    let mut out = Vec::new();
    let mut lit = Vec::new();
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        match c {
            '*' => {
                if !lit.is_empty() {
                    out.push(Pat::Lit(std::mem::take(&mut lit)));
                }
                if !matches!(out.last(), Some(Pat::Star)) {
                    out.push(Pat::Star);
                }
                rest = &rest[1..];
            }
            '{' => {
                let end = rest
                    .find('}')
                    .ok_or_else(|| format!("unclosed `{{` in {s:?}"))?;
                let name = &rest[1..end];
                check_name(name)?;
                if names.iter().any(|n| n == name) {
                    return Err(format!("`{{{name}}}` captured twice in {s:?}"));
                }
                names.push(name.to_string());
                if !lit.is_empty() {
                    out.push(Pat::Lit(std::mem::take(&mut lit)));
                }
                out.push(Pat::Cap(name.to_string()));
                rest = &rest[end + 1..];
            }
            '}' => return Err(format!("unmatched `}}` in {s:?}")),
            c => {
                let mut buf = [0u8; 4];
                lit.extend(
                    c.encode_utf8(&mut buf)
                        .bytes()
                        .map(|b| b.to_ascii_lowercase()),
                );
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    if !lit.is_empty() {
        out.push(Pat::Lit(lit));
    }
    Ok(out)
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        return Err(format!(
            "`{{{name}}}`: a capture name is lower-case letters, digits and `_`"
        ));
    }
    if BUILTINS.iter().any(|(n, _)| *n == name) {
        return Err(format!(
            "`{{{name}}}`: `{name}` is a built-in value, choose another name"
        ));
    }
    Ok(())
}

/// Matches `s` against `pats`; captures take as much as they can.
fn match_pats(pats: &[Pat], s: &[u8], vars: &mut Vars) -> bool {
    let Some((first, rest)) = pats.split_first() else {
        return s.is_empty();
    };
    match first {
        Pat::Lit(l) => {
            s.len() >= l.len()
                && s[..l.len()].eq_ignore_ascii_case(l)
                && match_pats(rest, &s[l.len()..], vars)
        }
        Pat::Star => (0..=s.len()).rev().any(|k| match_pats(rest, &s[k..], vars)),
        Pat::Cap(name) => {
            let n = vars.len();
            for k in (1..=s.len()).rev() {
                vars.push((name.clone(), String::from_utf8_lossy(&s[..k]).into_owned()));
                if match_pats(rest, &s[k..], vars) {
                    return true;
                }
                vars.truncate(n);
            }
            false
        }
    }
}

/// A host template (`*.googleapis.com`, `{account}.blob.core.windows.net`).
#[derive(Debug, Clone)]
struct HostPattern {
    text: String,
    pats: Vec<Pat>,
}

impl HostPattern {
    fn parse(s: &str, names: &mut Vec<String>) -> Result<HostPattern, String> {
        if s.is_empty() || s.contains(['/', ':', ' ']) {
            return Err(format!(
                "{s:?} is not a host name (no scheme, port or path)"
            ));
        }
        Ok(HostPattern {
            text: s.to_string(),
            pats: parse_pats(s, names)?,
        })
    }

    fn matches(&self, host: &str, vars: &mut Vars) -> bool {
        let n = vars.len();
        let ok = match_pats(&self.pats, host.as_bytes(), vars);
        if !ok {
            vars.truncate(n);
        }
        ok
    }
}

#[derive(Debug, Clone)]
enum Seg {
    One(Vec<Pat>),
    Any,
    Rest(String),
}

/// A path template (`/repos/{owner}/{repo}`, `/api/v*/**`), matched against percent-decoded
/// segments.
#[derive(Debug, Clone)]
struct PathPattern {
    segs: Vec<Seg>,
}

impl PathPattern {
    fn parse(s: &str, names: &mut Vec<String>) -> Result<PathPattern, String> {
        let Some(body) = s.strip_prefix('/') else {
            return Err(format!("{s:?}: a path template begins with `/`"));
        };
        let body = body.strip_suffix('/').unwrap_or(body);
        let mut segs = Vec::new();
        if !body.is_empty() {
            for part in body.split('/') {
                if part == "**" {
                    segs.push(Seg::Any);
                } else if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix("+}"))
                {
                    check_name(name)?;
                    names.push(name.to_string());
                    segs.push(Seg::Rest(name.to_string()));
                } else if part.contains("**") {
                    return Err(format!("{s:?}: `**` must be a whole segment"));
                } else {
                    segs.push(Seg::One(parse_pats(part, names)?));
                }
            }
        }
        Ok(PathPattern { segs })
    }

    fn matches(&self, segs: &[String], vars: &mut Vars) -> bool {
        let n = vars.len();
        let ok = match_segs(&self.segs, segs, vars);
        if !ok {
            vars.truncate(n);
        }
        ok
    }
}

fn match_segs(pat: &[Seg], segs: &[String], vars: &mut Vars) -> bool {
    let Some((first, rest)) = pat.split_first() else {
        return segs.is_empty();
    };
    let n = vars.len();
    match first {
        Seg::Any => (0..=segs.len()).any(|k| {
            let ok = match_segs(rest, &segs[k..], vars);
            if !ok {
                vars.truncate(n);
            }
            ok
        }),
        Seg::Rest(name) => {
            for k in (1..=segs.len()).rev() {
                vars.push((name.clone(), segs[..k].join("/")));
                if match_segs(rest, &segs[k..], vars) {
                    return true;
                }
                vars.truncate(n);
            }
            false
        }
        Seg::One(p) => {
            let Some((s, tail)) = segs.split_first() else {
                return false;
            };
            let ok = match_pats(p, s.as_bytes(), vars) && match_segs(rest, tail, vars);
            if !ok {
                vars.truncate(n);
            }
            ok
        }
    }
}

// ---------------------------------------------------------------------------------------------
// JSON pointers whose segments may be globs (`/RequestItems/*/*/DeleteRequest`).

#[derive(Debug, Clone)]
struct Pointer {
    text: String,
    segs: Vec<PtrSeg>,
}

#[derive(Debug, Clone)]
enum PtrSeg {
    Key(String),
    Glob(GlobMatcher),
}

impl Pointer {
    fn parse(p: &str) -> Result<Pointer, String> {
        if !(p.is_empty() || p.starts_with('/')) {
            return Err(format!("{p:?}: a JSON pointer begins with `/`"));
        }
        let mut segs = Vec::new();
        for raw in p.split('/').skip(1) {
            let s = raw.replace("~1", "/").replace("~0", "~");
            segs.push(if s.contains(['*', '?', '[', '{']) {
                PtrSeg::Glob(glob(&s)?)
            } else {
                PtrSeg::Key(s)
            });
        }
        Ok(Pointer {
            text: p.to_string(),
            segs,
        })
    }

    fn label(&self) -> String {
        self.text.rsplit('/').next().unwrap_or_default().to_string()
    }

    fn select<'v>(&self, v: &'v Value, out: &mut Vec<&'v Value>) {
        select(&self.segs, v, out);
    }
}

fn select<'v>(segs: &[PtrSeg], v: &'v Value, out: &mut Vec<&'v Value>) {
    let Some((seg, rest)) = segs.split_first() else {
        out.push(v);
        return;
    };
    let hit = |k: &str| match seg {
        PtrSeg::Key(s) => s.eq_ignore_ascii_case(k),
        PtrSeg::Glob(g) => g.is_match(k),
    };
    match v {
        Value::Object(m) => m
            .iter()
            .filter(|(k, _)| hit(k))
            .for_each(|(_, x)| select(rest, x, out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .filter(|(i, _)| hit(&i.to_string()))
            .for_each(|(_, x)| select(rest, x, out)),
        _ => {}
    }
}

/// Scalars as text (arrays flattened, objects as compact JSON); `null` only when `nulls`.
fn json_texts(v: &Value, nulls: bool, out: &mut Vec<String>) {
    match v {
        Value::Null if nulls => out.push("null".into()),
        Value::Null => {}
        Value::String(s) => out.push(s.clone()),
        Value::Bool(_) | Value::Number(_) | Value::Object(_) => out.push(v.to_string()),
        Value::Array(a) => a.iter().for_each(|x| json_texts(x, nulls, out)),
    }
}

// ---------------------------------------------------------------------------------------------
// The request as parsed for matching; each part is parsed at most once, and only when a rule
// asks for it.

struct Cx<'r, 'a> {
    req: &'r Request<'a>,
    host: &'r str,
    /// False while deciding whether the body is needed: conditions on it are then `Maybe`.
    body_known: bool,
    s3_hosts: &'r [HostPattern],
    scope: OnceCell<Option<(String, String)>>,
    query: OnceCell<Vec<(String, String)>>,
    form: OnceCell<Vec<(String, String)>>,
    json: OnceCell<Option<Value>>,
    xml: OnceCell<Vec<XmlElem>>,
    graphql: OnceCell<Vec<GqlField>>,
    segments: OnceCell<(Vec<String>, Option<Vec<String>>)>,
    s3: OnceCell<Option<S3Addr>>,
}

impl<'r, 'a> Cx<'r, 'a> {
    fn new(req: &'r Request<'a>, s3_hosts: &'r [HostPattern], body_known: bool) -> Self {
        Cx {
            req,
            host: req.host.trim_end_matches('.'),
            body_known,
            s3_hosts,
            scope: OnceCell::new(),
            query: OnceCell::new(),
            form: OnceCell::new(),
            json: OnceCell::new(),
            xml: OnceCell::new(),
            graphql: OnceCell::new(),
            segments: OnceCell::new(),
            s3: OnceCell::new(),
        }
    }

    /// Whether the method, or a method tunnelled through a POST with an override header (which
    /// Google APIs and others honour), is one of `list`.
    fn method_is(&self, list: &[String]) -> bool {
        let hit = |m: &str| list.iter().any(|x| x.eq_ignore_ascii_case(m.trim()));
        hit(self.req.method)
            || METHOD_OVERRIDES.iter().any(|h| {
                self.req
                    .headers
                    .get_all(*h)
                    .iter()
                    .any(|v| v.to_str().is_ok_and(hit))
            })
    }

    fn header(&self, name: &str) -> Option<String> {
        self.req
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// The SigV4 scope; an S3 SigV2 signature (`Authorization: AWS AKID:SIG`, or presigned with
    /// `AWSAccessKeyId`) counts as service `s3` with no region (S3-compatible stores still take it).
    fn scope(&self) -> Option<&(String, String)> {
        self.scope
            .get_or_init(|| {
                aws_scope(self.req).or_else(|| {
                    let v2_header = self
                        .req
                        .headers
                        .get_all(http::header::AUTHORIZATION)
                        .iter()
                        .any(|v| {
                            let v = v.as_bytes();
                            v.len() > 4 && v[..4].eq_ignore_ascii_case(b"AWS ") && v.contains(&b':')
                        });
                    let v2_query = self
                        .query()
                        .iter()
                        .any(|(k, _)| k.eq_ignore_ascii_case("AWSAccessKeyId"))
                        && self
                            .query()
                            .iter()
                            .any(|(k, _)| k.eq_ignore_ascii_case("Signature"));
                    (v2_header || v2_query).then(|| ("s3".to_string(), String::new()))
                })
            })
            .as_ref()
    }

    fn service(&self) -> Option<&str> {
        self.scope().map(|(s, _)| s.as_str())
    }

    fn target(&self) -> Option<&str> {
        self.req
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    }

    fn query(&self) -> &[(String, String)] {
        self.query.get_or_init(|| {
            self.req
                .query
                .map(|q| parse_pairs(q.as_bytes(), true))
                .unwrap_or_default()
        })
    }

    fn content_length_zero(&self) -> bool {
        self.req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes().iter().all(|b| *b == b'0'))
    }

    /// Whether the request may carry a body.
    fn body_possible(&self) -> bool {
        !matches!(
            self.req.method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "CONNECT"
        ) && !self.content_length_zero()
    }

    /// Whether the body is (or may be) form-encoded parameters: a POST whose content type is
    /// form-encoded or missing (and not an AWS JSON-protocol call).
    fn form_typed(&self) -> bool {
        self.req.method.eq_ignore_ascii_case("POST")
            && self.target().is_none()
            && self.header("content-type").is_none_or(|t| {
                t.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/x-www-form-urlencoded")
            })
    }

    fn form_possible(&self) -> bool {
        self.form_typed() && !self.content_length_zero()
    }

    fn form(&self) -> &[(String, String)] {
        self.form.get_or_init(|| {
            if self.body_known && self.form_typed() {
                parse_pairs(self.req.body, true)
            } else {
                Vec::new()
            }
        })
    }

    fn json(&self) -> Option<&Value> {
        self.json
            .get_or_init(|| {
                if self.body_known && !self.req.body.is_empty() {
                    serde_json::from_slice(self.req.body).ok()
                } else {
                    None
                }
            })
            .as_ref()
    }

    fn xml(&self) -> &[XmlElem] {
        self.xml.get_or_init(|| {
            if self.body_known {
                xml_elements(&String::from_utf8_lossy(self.req.body))
            } else {
                Vec::new()
            }
        })
    }

    fn graphql(&self) -> &[GqlField] {
        self.graphql.get_or_init(|| {
            if !self.body_known {
                return Vec::new();
            }
            let mut out = Vec::new();
            let mut one = |v: &Value| {
                if let Some(q) = v.get("query").and_then(Value::as_str) {
                    out.extend(graphql_mutations(q, v.get("variables")));
                }
            };
            match self.json() {
                Some(Value::Array(a)) => a.iter().for_each(&mut one),
                Some(v) => one(v),
                None => {
                    // `application/graphql`: the body is the document itself.
                    if self
                        .header("content-type")
                        .is_some_and(|t| t.contains("graphql"))
                    {
                        out.extend(graphql_mutations(
                            &String::from_utf8_lossy(self.req.body),
                            None,
                        ));
                    }
                }
            }
            out
        })
    }

    /// The path's segments percent-decoded, as sent and, when different, cleaned (empty, `.`
    /// and `..` segments resolved) the way many servers clean them.
    fn segments(&self) -> (&[String], Option<&Vec<String>>) {
        let (raw, clean) = self.segments.get_or_init(|| {
            let body = self.req.path.strip_prefix('/').unwrap_or(self.req.path);
            let body = body.strip_suffix('/').unwrap_or(body);
            let raw: Vec<String> = if body.is_empty() {
                Vec::new()
            } else {
                body.split('/')
                    .map(|s| percent_decode(s.as_bytes(), false))
                    .collect()
            };
            let mut clean: Vec<String> = Vec::new();
            for s in &raw {
                match s.as_str() {
                    "" | "." => {}
                    ".." => {
                        clean.pop();
                    }
                    _ => clean.push(s.clone()),
                }
            }
            let clean = (clean != raw).then_some(clean);
            (raw, clean)
        });
        (raw, clean.as_ref())
    }

    fn s3(&self) -> Option<&S3Addr> {
        self.s3
            .get_or_init(|| {
                let path = self.req.path.strip_prefix('/').unwrap_or(self.req.path);
                for h in self.s3_hosts {
                    let mut vars = Vars::new();
                    if h.matches(self.host, &mut vars) {
                        if let Some(b) = var(&vars, "bucket") {
                            return Some(S3Addr {
                                bucket: Some(b.to_string()),
                                key: (!path.is_empty())
                                    .then(|| percent_decode(path.as_bytes(), false)),
                            });
                        }
                    }
                }
                let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
                Some(S3Addr {
                    bucket: (!bucket.is_empty()).then(|| percent_decode(bucket.as_bytes(), false)),
                    key: (!key.is_empty()).then(|| percent_decode(key.as_bytes(), false)),
                })
            })
            .as_ref()
    }
}

/// Where an S3 request points.
#[derive(Debug)]
struct S3Addr {
    bucket: Option<String>,
    key: Option<String>,
}

impl S3Addr {
    fn kind(&self) -> S3Kind {
        match (&self.bucket, &self.key) {
            (None, _) => S3Kind::Root,
            (Some(_), None) => S3Kind::Bucket,
            (Some(_), Some(_)) => S3Kind::Object,
        }
    }
}

fn credential_scope(
    cred: &str,
    v4a: bool,
    region_set: impl FnOnce() -> Option<String>,
) -> Option<(String, String)> {
    let parts: Vec<&str> = cred.trim().split('/').collect();
    if !parts.last()?.eq_ignore_ascii_case("aws4_request") {
        return None;
    }
    let n = parts.len();
    let (service, region) = if v4a {
        (
            *parts.get(n.checked_sub(2)?)?,
            region_set().unwrap_or_else(|| "*".into()),
        )
    } else if n >= 5 {
        (parts[n - 2], parts[n - 3].to_ascii_lowercase())
    } else {
        return None;
    };
    (!service.is_empty()).then(|| (service.to_ascii_lowercase(), region))
}

// ---------------------------------------------------------------------------------------------
// Decoding.

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `s` (`+` as a space when `plus_space`: forms and query strings); invalid
/// escapes stay as they are, invalid UTF-8 becomes U+FFFD.
fn percent_decode(s: &[u8], plus_space: bool) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => match (
                s.get(i + 1).and_then(|b| hex(*b)),
                s.get(i + 2).and_then(|b| hex(*b)),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a=1&b=2` as decoded pairs, in order (a name without `=` has an empty value).
fn parse_pairs(s: &[u8], plus_space: bool) -> Vec<(String, String)> {
    s.split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = match p.iter().position(|b| *b == b'=') {
                Some(i) => (&p[..i], &p[i + 1..]),
                None => (p, &[][..]),
            };
            (percent_decode(k, plus_space), percent_decode(v, plus_space))
        })
        .collect()
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn xml_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let decoded = rest.find(';').filter(|e| *e <= 12).and_then(|e| {
            let c = match &rest[1..e] {
                "lt" => Some('<'),
                "gt" => Some('>'),
                "amp" => Some('&'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                n => {
                    let n = n.strip_prefix('#')?;
                    let code = match n.strip_prefix(['x', 'X']) {
                        Some(h) => u32::from_str_radix(h, 16).ok()?,
                        None => n.parse().ok()?,
                    };
                    char::from_u32(code)
                }
            }?;
            Some((c, e))
        });
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &rest[e + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// One element of an XML body: its local name, and its text when it has no child elements.
#[derive(Debug)]
struct XmlElem {
    name: String,
    text: Option<String>,
}

/// The elements of an XML document, tolerant of anything malformed (it never fails, it finds
/// less).
fn xml_elements(doc: &str) -> Vec<XmlElem> {
    struct Open {
        name: String,
        text: String,
        children: bool,
    }
    let local = |n: &str| n.rsplit(':').next().unwrap_or(n).to_string();
    let mut out = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    let mut rest = doc;
    while let Some(lt) = rest.find('<') {
        if let Some(top) = stack.last_mut() {
            top.text.push_str(&xml_unescape(&rest[..lt]));
        }
        rest = &rest[lt..];
        if let Some(r) = rest.strip_prefix("<!--") {
            rest = r.find("-->").map_or("", |e| &r[e + 3..]);
            continue;
        }
        if let Some(r) = rest.strip_prefix("<![CDATA[") {
            let e = r.find("]]>").unwrap_or(r.len());
            if let Some(top) = stack.last_mut() {
                top.text.push_str(&r[..e]);
            }
            rest = r.get(e + 3..).unwrap_or("");
            continue;
        }
        if rest.starts_with("<?") || rest.starts_with("<!") {
            rest = rest.find('>').map_or("", |e| &rest[e + 1..]);
            continue;
        }
        // The end of the tag, outside quoted attribute values.
        let mut quote = None;
        let end = rest.char_indices().skip(1).find_map(|(i, c)| {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if q == c => quote = None,
                (None, '>') => return Some(i),
                _ => {}
            }
            None
        });
        let Some(end) = end else { break };
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let name = local(name.trim());
            if let Some(pos) = stack
                .iter()
                .rposition(|o| o.name.eq_ignore_ascii_case(&name))
            {
                while stack.len() > pos {
                    if let Some(o) = stack.pop() {
                        out.push(XmlElem {
                            name: o.name,
                            text: (!o.children).then_some(o.text),
                        });
                    }
                }
            }
        } else {
            let name = local(
                tag.split(|c: char| c.is_whitespace() || c == '/')
                    .next()
                    .unwrap_or(""),
            );
            if name.is_empty() {
                continue;
            }
            if let Some(top) = stack.last_mut() {
                top.children = true;
            }
            if tag.ends_with('/') {
                out.push(XmlElem {
                    name,
                    text: Some(String::new()),
                });
            } else {
                stack.push(Open {
                    name,
                    text: String::new(),
                    children: false,
                });
            }
        }
    }
    while let Some(o) = stack.pop() {
        out.push(XmlElem {
            name: o.name,
            text: (!o.children).then_some(o.text),
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// GraphQL: the top-level fields of the `mutation` operations of a document, with their
// arguments (variables filled in). A small tokenizer, not a validating parser.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Var(String),
    Str(String),
    Punct(char),
    Spread,
    Other(String),
}

/// A mutation field: `deleteApp(appId: "my-app")`.
#[derive(Debug, Clone)]
struct GqlField {
    name: String,
    args: Vec<(String, String)>,
}

impl GqlField {
    fn render(&self) -> String {
        if self.args.is_empty() {
            return self.name.clone();
        }
        let args: Vec<String> = self.args.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        format!("{}({})", self.name, args.join(", "))
    }
}

fn graphql_lex(s: &str) -> Vec<Tok> {
    let c: Vec<char> = s.chars().collect();
    let name_char = |x: char| x.is_ascii_alphanumeric() || x == '_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() || ch == ',' || ch == '\u{feff}' {
            i += 1;
        } else if ch == '#' {
            while i < c.len() && c[i] != '\n' && c[i] != '\r' {
                i += 1;
            }
        } else if c[i..].starts_with(&['"', '"', '"']) {
            i += 3;
            let start = i;
            while i < c.len() && !c[i..].starts_with(&['"', '"', '"']) {
                i += if c[i..].starts_with(&['\\', '"', '"', '"']) {
                    4
                } else {
                    1
                };
            }
            out.push(Tok::Str(c[start..i.min(c.len())].iter().collect()));
            i += 3;
        } else if ch == '"' {
            i += 1;
            let mut text = String::new();
            while i < c.len() && c[i] != '"' && c[i] != '\n' {
                if c[i] == '\\' && i + 1 < c.len() {
                    text.push(match c[i + 1] {
                        'n' => '\n',
                        't' => '\t',
                        x => x,
                    });
                    i += 2;
                } else {
                    text.push(c[i]);
                    i += 1;
                }
            }
            out.push(Tok::Str(text));
            i += 1;
        } else if ch == '$' || name_char(ch) && !ch.is_ascii_digit() {
            let start = if ch == '$' { i + 1 } else { i };
            i = start;
            while i < c.len() && name_char(c[i]) {
                i += 1;
            }
            let name: String = c[start..i].iter().collect();
            out.push(if ch == '$' {
                Tok::Var(name)
            } else {
                Tok::Name(name)
            });
        } else if c[i..].starts_with(&['.', '.', '.']) {
            out.push(Tok::Spread);
            i += 3;
        } else if ch == '-' || ch.is_ascii_digit() {
            let start = i;
            i += 1;
            while i < c.len() && (c[i].is_ascii_alphanumeric() || matches!(c[i], '.' | '+' | '-')) {
                i += 1;
            }
            out.push(Tok::Other(c[start..i].iter().collect()));
        } else {
            out.push(Tok::Punct(ch));
            i += 1;
        }
    }
    out
}

fn graphql_mutations(doc: &str, variables: Option<&Value>) -> Vec<GqlField> {
    let t = graphql_lex(doc);
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < t.len() {
        match &t[i] {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => depth = depth.saturating_sub(1),
            Tok::Name(n) if depth == 0 && n == "mutation" => {
                // Skip the name, variable definitions and directives up to the selection set.
                let mut parens = 0usize;
                i += 1;
                while i < t.len() {
                    match t[i] {
                        Tok::Punct('(') => parens += 1,
                        Tok::Punct(')') => parens = parens.saturating_sub(1),
                        Tok::Punct('{') if parens == 0 => break,
                        _ => {}
                    }
                    i += 1;
                }
                i += 1;
                graphql_selection(&t, &mut i, variables, &mut out);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Reads the fields of a selection set whose `{` is just behind `i`, through its `}`.
fn graphql_selection(t: &[Tok], i: &mut usize, vars: Option<&Value>, out: &mut Vec<GqlField>) {
    while let Some(tok) = t.get(*i) {
        match tok {
            Tok::Punct('}') => {
                *i += 1;
                return;
            }
            Tok::Name(n) => {
                *i += 1;
                let mut name = n.clone();
                if t.get(*i) == Some(&Tok::Punct(':')) {
                    if let Some(Tok::Name(real)) = t.get(*i + 1) {
                        name = real.clone();
                        *i += 2;
                    }
                }
                let mut args = Vec::new();
                if t.get(*i) == Some(&Tok::Punct('(')) {
                    *i += 1;
                    while let Some(tok) = t.get(*i) {
                        match tok {
                            Tok::Punct(')') => {
                                *i += 1;
                                break;
                            }
                            Tok::Name(a) if t.get(*i + 1) == Some(&Tok::Punct(':')) => {
                                let a = a.clone();
                                *i += 2;
                                args.push((a, graphql_value(t, i, vars, 0)));
                            }
                            _ => *i += 1,
                        }
                    }
                }
                graphql_skip_directives(t, i);
                if t.get(*i) == Some(&Tok::Punct('{')) {
                    graphql_skip_block(t, i);
                }
                out.push(GqlField { name, args });
            }
            Tok::Spread => {
                *i += 1;
                if matches!(t.get(*i), Some(Tok::Name(n)) if n == "on") {
                    *i += 2;
                } else if matches!(t.get(*i), Some(Tok::Name(_))) {
                    *i += 1;
                }
                graphql_skip_directives(t, i);
                if t.get(*i) == Some(&Tok::Punct('{')) {
                    graphql_skip_block(t, i);
                }
            }
            _ => *i += 1,
        }
    }
}

fn graphql_skip_directives(t: &[Tok], i: &mut usize) {
    while t.get(*i) == Some(&Tok::Punct('@')) {
        *i += 2;
        if t.get(*i) == Some(&Tok::Punct('(')) {
            let mut depth = 0usize;
            while let Some(tok) = t.get(*i) {
                *i += 1;
                match tok {
                    Tok::Punct('(') => depth += 1,
                    Tok::Punct(')') => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Skips a balanced `{ ... }` starting at `i`.
fn graphql_skip_block(t: &[Tok], i: &mut usize) {
    let mut depth = 0usize;
    while let Some(tok) = t.get(*i) {
        *i += 1;
        match tok {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return;
                }
            }
            _ => {}
        }
    }
}

/// One argument value, as text (`$var` replaced by the variable's JSON value).
fn graphql_value(t: &[Tok], i: &mut usize, vars: Option<&Value>, depth: usize) -> String {
    let Some(tok) = t.get(*i) else {
        return String::new();
    };
    *i += 1;
    match tok {
        Tok::Var(v) => match vars.and_then(|m| m.get(v)) {
            Some(x) => x.to_string(),
            None => format!("${v}"),
        },
        Tok::Str(s) => Value::String(s.clone()).to_string(),
        Tok::Name(s) | Tok::Other(s) => s.clone(),
        Tok::Punct(open @ ('[' | '{')) => {
            let close = if *open == '[' { ']' } else { '}' };
            let mut items = Vec::new();
            while let Some(tok) = t.get(*i) {
                match tok {
                    Tok::Punct(c) if *c == close => {
                        *i += 1;
                        break;
                    }
                    _ if depth >= MAX_GRAPHQL_DEPTH => *i += 1,
                    Tok::Name(k) if close == '}' && t.get(*i + 1) == Some(&Tok::Punct(':')) => {
                        let k = k.clone();
                        *i += 2;
                        items.push(format!("{k}: {}", graphql_value(t, i, vars, depth + 1)));
                    }
                    _ => items.push(graphql_value(t, i, vars, depth + 1)),
                }
            }
            format!("{open}{}{close}", items.join(", "))
        }
        _ => String::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Loading a catalogue.

/// An error at a byte range of the file.
type Fail = (Range<usize>, String);

fn fail<T>(s: &Spanned<T>, msg: impl Into<String>) -> Fail {
    (s.span(), msg.into())
}

fn glob(p: &str) -> Result<GlobMatcher, String> {
    GlobBuilder::new(p)
        .case_insensitive(true)
        .literal_separator(false)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("bad pattern {p:?}: {e}"))
}

fn glob_set(list: &[Str], what: &str) -> Result<Option<GlobSet>, Fail> {
    if list.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in list {
        let g = GlobBuilder::new(p.get_ref())
            .case_insensitive(true)
            .literal_separator(false)
            .build()
            .map_err(|e| fail(p, format!("{what}: bad pattern {:?}: {e}", p.get_ref())))?;
        b.add(g);
    }
    b.build()
        .map(Some)
        .map_err(|e| fail(&list[0], format!("{what}: {e}")))
}

/// A table of `NAME = [patterns]` whose pattern lists must not be empty.
fn table_sets<'t>(table: &'t Table, what: &str) -> Result<Vec<(&'t Str, GlobSet)>, Fail> {
    let mut out = Vec::new();
    for (k, list) in table {
        match glob_set(list, what)? {
            Some(g) => out.push((k, g)),
            None => {
                return Err(fail(
                    k,
                    format!("{what}.{}: an empty list never matches", k.get_ref()),
                ))
            }
        }
    }
    Ok(out)
}

/// Compiles conditions; the names captured by host and path templates go to `names`.
fn compile_conds(raw: &RawConds, names: &mut Vec<String>, known: &[String]) -> Result<Conds, Fail> {
    let mut c = Conds::default();
    for m in raw.method {
        let s = m.get_ref();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(fail(m, format!("method: {s:?} is not an HTTP method")));
        }
        c.method.push(s.to_ascii_uppercase());
    }
    // Each alternative may capture the same names.
    let mut add = |mine: Vec<String>| {
        for n in mine {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    };
    for h in raw.host {
        let mut mine = Vec::new();
        c.host.push(
            HostPattern::parse(h.get_ref(), &mut mine)
                .map_err(|e| fail(h, format!("host: {e}")))?,
        );
        add(mine);
    }
    for p in raw.path {
        let mut mine = Vec::new();
        c.path.push(
            PathPattern::parse(p.get_ref(), &mut mine)
                .map_err(|e| fail(p, format!("path: {e}")))?,
        );
        add(mine);
    }
    c.aws_service = glob_set(raw.aws_service, "aws_service")?;
    c.aws_target = glob_set(raw.aws_target, "aws_target")?;
    if let Some(s) = raw.s3 {
        c.s3 = Some(match s.get_ref().as_str() {
            "root" => S3Kind::Root,
            "bucket" => S3Kind::Bucket,
            "object" => S3Kind::Object,
            x => {
                return Err(fail(
                    s,
                    format!("s3: {x:?}: expected \"bucket\", \"object\" or \"root\""),
                ))
            }
        });
        names.extend(["bucket".to_string(), "key".to_string()]);
    }
    for (k, g) in table_sets(raw.params, "params")? {
        c.params.push((
            glob(k.get_ref()).map_err(|e| fail(k, format!("params: {e}")))?,
            g,
        ));
    }
    for (k, g) in table_sets(raw.json, "json")? {
        c.json.push((
            Pointer::parse(k.get_ref()).map_err(|e| fail(k, format!("json: {e}")))?,
            g,
        ));
    }
    for (k, g) in table_sets(raw.xml, "xml")? {
        c.xml.push((k.get_ref().clone(), g));
    }
    c.graphql = glob_set(raw.graphql, "graphql")?;
    for (k, g) in table_sets(raw.vars, "vars")? {
        if !names.contains(k.get_ref()) && !known.contains(k.get_ref()) {
            return Err(fail(
                k,
                format!("vars.{}: no host or path template captures it", k.get_ref()),
            ));
        }
        c.vars.push((k.get_ref().clone(), g));
    }
    Ok(c)
}

fn compile_rule(raw: &Spanned<RawRule>) -> Result<Rule, Fail> {
    let r = raw.get_ref();
    let id = r.id.get_ref();
    let id_ok = !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if !id_ok {
        return Err(fail(
            &r.id,
            format!("id: {id:?}: use lower-case letters, digits, `-`, `_`, `.`"),
        ));
    }
    let ctx = |(span, msg): Fail| (span, format!("rule {id}: {msg}"));
    let mut names = Vec::new();
    let when = compile_conds(&r.conditions(), &mut names, &[]).map_err(ctx)?;
    if when.is_empty() {
        return Err(ctx(fail(raw, "no conditions: it would hold every request")));
    }
    let mut unless = Vec::new();
    for u in &r.unless {
        let c = compile_conds(&u.get_ref().conditions(), &mut Vec::new(), &names).map_err(ctx)?;
        if c.is_empty() {
            return Err(ctx(fail(
                u,
                "unless: an empty table would switch the rule off",
            )));
        }
        unless.push(c);
    }
    let known: HashSet<String> = names.into_iter().collect();
    let template = parse_template(r.description.get_ref(), &known)
        .map_err(|e| ctx(fail(&r.description, format!("description: {e}"))))?;
    let sources = |list: &[Str], what: &str| -> Result<Vec<Source>, Fail> {
        list.iter()
            .map(|s| {
                Source::parse(s.get_ref(), &known).map_err(|e| ctx(fail(s, format!("{what}: {e}"))))
            })
            .collect()
    };
    let resources = sources(&r.resources, "resources")?;
    let details = sources(&r.details, "details")?;
    let (mut reads_form, mut reads_other) = (false, false);
    let template_sources = template.iter().filter_map(|p| match p {
        Piece::Source(s) => Some(s),
        Piece::Text(_) => None,
    });
    for s in template_sources.chain(&resources).chain(&details) {
        let (f, o) = s.reads();
        reads_form |= f;
        reads_other |= o;
    }
    if r.examples.is_empty() {
        return Err(ctx(fail(
            raw,
            "no examples: give at least one request it must hold",
        )));
    }
    if r.near_misses.is_empty() {
        return Err(ctx(fail(
            raw,
            "no near_misses: give at least one similar request it must let through",
        )));
    }
    let example = |e: &Spanned<RawExample>, near: bool| -> Result<Example, Fail> {
        let x = e.get_ref();
        if let (true, Some(d)) = (near, &x.description) {
            return Err(ctx(fail(d, "near_misses: a near miss has no description")));
        }
        Ok(Example {
            req: example_request(x).map_err(ctx)?,
            description: x.description.as_ref().map(|d| d.get_ref().clone()),
            span: e.span(),
        })
    };
    Ok(Rule {
        id: id.clone(),
        template,
        resources,
        details,
        when,
        unless,
        reads_form,
        reads_other,
        examples: r
            .examples
            .iter()
            .map(|e| example(e, false))
            .collect::<Result<_, _>>()?,
        near_misses: r
            .near_misses
            .iter()
            .map(|e| example(e, true))
            .collect::<Result<_, _>>()?,
    })
}

/// A request written in a catalogue.
#[derive(Debug, Clone)]
struct Example {
    req: OwnedRequest,
    description: Option<String>,
    span: Range<usize>,
}

#[derive(Debug, Clone)]
struct OwnedRequest {
    method: String,
    host: String,
    path: String,
    query: Option<String>,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl OwnedRequest {
    fn view(&self) -> Request<'_> {
        Request {
            method: &self.method,
            host: &self.host,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
            body: &self.body,
        }
    }
}

/// Parses `METHOD URL` (an absolute `http`/`https` URL).
fn parse_request_line(s: &str) -> Result<OwnedRequest, String> {
    let (method, url) = s.trim().split_once(' ').ok_or("expected \"METHOD URL\"")?;
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(format!("{method:?} is not an HTTP method"));
    }
    let url = url.trim();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?}: expected an http:// or https:// URL"))?;
    if rest.contains(char::is_whitespace) {
        return Err(format!(
            "{url:?}: a URL has no spaces (percent-encode them)"
        ));
    }
    let rest = rest.split('#').next().unwrap_or(rest);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else {
        authority.split(':').next().unwrap_or(authority)
    };
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    let (path, query) = match rest[end..].split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (&rest[end..], None),
    };
    Ok(OwnedRequest {
        method: method.to_ascii_uppercase(),
        host: host.to_ascii_lowercase(),
        path: if path.is_empty() {
            "/".into()
        } else {
            path.to_string()
        },
        query,
        headers: http::HeaderMap::new(),
        body: Vec::new(),
    })
}

fn example_request(x: &RawExample) -> Result<OwnedRequest, Fail> {
    let mut req = parse_request_line(x.request.get_ref())
        .map_err(|e| fail(&x.request, format!("request: {e}")))?;
    let here = |msg: String| fail(&x.request, msg);
    for (k, v) in &x.headers {
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| here(format!("headers: bad name {k:?}")))?;
        let value =
            http::HeaderValue::from_str(v).map_err(|_| here(format!("headers.{k}: bad value")))?;
        req.headers.append(name, value);
    }
    if let Some(s) = &x.sign {
        let (service, region) = s
            .get_ref()
            .split_once('/')
            .unwrap_or((s.get_ref(), "us-east-1"));
        if service.is_empty()
            || !service
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(fail(s, "sign: expected \"SERVICE\" or \"SERVICE/REGION\""));
        }
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/{region}/{service}/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature={}",
            "0".repeat(64)
        );
        let value = http::HeaderValue::from_str(&auth).map_err(|_| fail(s, "sign: bad value"))?;
        req.headers.append(http::header::AUTHORIZATION, value);
    }
    match (&x.form, &x.body) {
        (Some(_), Some(_)) => return Err(here("give `form` or `body`, not both".into())),
        (Some(f), None) => {
            req.body = f.clone().into_bytes();
            if !req.headers.contains_key(http::header::CONTENT_TYPE) {
                req.headers.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static(
                        "application/x-www-form-urlencoded; charset=utf-8",
                    ),
                );
            }
        }
        (None, Some(b)) => req.body = b.clone().into_bytes(),
        (None, None) => {}
    }
    Ok(req)
}

fn parse_catalogue(text: &str, check: bool) -> Result<Catalogue, Fail> {
    let raw: RawCatalogue = toml::from_str(text).map_err(|e| {
        let at = e.span().unwrap_or(0..0);
        let key = key_at(text, at.start)
            .map(|k| format!("{k}: "))
            .unwrap_or_default();
        (at, format!("{key}{}", e.message().trim_end()))
    })?;
    let mut cat = Catalogue::default();
    for h in S3_VIRTUAL_HOSTS {
        if let Ok(p) = HostPattern::parse(h, &mut Vec::new()) {
            cat.s3_hosts.push(p);
        }
    }
    for h in &raw.s3_virtual_hosts {
        let mut names = Vec::new();
        let p = HostPattern::parse(h.get_ref(), &mut names)
            .map_err(|e| fail(h, format!("s3_virtual_hosts: {e}")))?;
        if !names.iter().any(|n| n == "bucket") {
            return Err(fail(
                h,
                "s3_virtual_hosts: the template must capture {bucket}",
            ));
        }
        cat.s3_hosts.push(p);
    }
    let mut ids = HashSet::new();
    for r in &raw.rule {
        let rule = compile_rule(r)?;
        if !ids.insert(rule.id.clone()) {
            return Err(fail(
                &r.get_ref().id,
                format!("id: {:?} is used by an earlier rule", rule.id),
            ));
        }
        cat.rules.push(rule);
    }
    if cat.rules.is_empty() {
        return Err((0..0, "no [[rule]] in the catalogue".into()));
    }
    if check {
        if let Some((span, msg)) = cat.check().into_iter().next() {
            return Err((span, msg));
        }
    }
    Ok(cat)
}

impl Catalogue {
    /// Checks every rule's examples and near misses against the whole catalogue: an example must
    /// be classified as its own rule (with the description it states), a near miss as nothing.
    fn check(&self) -> Vec<Fail> {
        let mut out = Vec::new();
        for rule in &self.rules {
            for (n, e) in rule.examples.iter().enumerate() {
                let n = n + 1;
                match self.classify(&e.req.view()) {
                    None => out.push((
                        e.span.clone(),
                        format!("rule {}: example {n} matches no rule", rule.id),
                    )),
                    Some(m) if m.rule != rule.id => out.push((
                        e.span.clone(),
                        format!(
                            "rule {}: example {n} is taken by the earlier rule {}",
                            rule.id, m.rule
                        ),
                    )),
                    Some(m) => {
                        if let Some(want) = e.description.as_ref().filter(|d| **d != m.description)
                        {
                            out.push((
                                e.span.clone(),
                                format!(
                                    "rule {}: example {n} is described as {:?}, not {want:?}",
                                    rule.id, m.description
                                ),
                            ));
                        }
                    }
                }
            }
            for (n, e) in rule.near_misses.iter().enumerate() {
                if let Some(m) = self.classify(&e.req.view()) {
                    out.push((
                        e.span.clone(),
                        format!(
                            "rule {}: near miss {} matches rule {}",
                            rule.id,
                            n + 1,
                            m.rule
                        ),
                    ));
                }
            }
        }
        out
    }
}

/// `NAME:LINE:COLUMN: message`, the column counted in characters.
fn locate(name: &str, text: &str, offset: usize, msg: &str) -> String {
    let mut off = offset.min(text.len());
    while !text.is_char_boundary(off) {
        off -= 1;
    }
    let before = &text[..off];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    format!("{name}:{line}:{col}: {msg}")
}

/// The key whose name or value contains byte `offset` (`rule[3].examples[0].request`), if any.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    if !key_in_table(doc.get_ref(), offset, &mut path) {
        return None;
    }
    let mut s = String::new();
    for p in path {
        if !s.is_empty() && !p.starts_with('[') {
            s.push('.');
        }
        s.push_str(&p);
    }
    Some(s)
}

fn key_in_table(t: &toml::de::DeTable<'_>, offset: usize, path: &mut Vec<String>) -> bool {
    for (k, v) in t {
        path.push(k.get_ref().to_string());
        if k.span().contains(&offset) || key_in_value(v, offset, path) || v.span().contains(&offset)
        {
            return true;
        }
        path.pop();
    }
    false
}

fn key_in_value(v: &Spanned<toml::de::DeValue<'_>>, offset: usize, path: &mut Vec<String>) -> bool {
    match v.get_ref() {
        toml::de::DeValue::Table(t) => key_in_table(t, offset, path),
        toml::de::DeValue::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                path.push(format!("[{i}]"));
                if key_in_value(x, offset, path) || x.span().contains(&offset) {
                    return true;
                }
                path.pop();
            }
            false
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin() -> Catalogue {
        static CAT: std::sync::OnceLock<Catalogue> = std::sync::OnceLock::new();
        CAT.get_or_init(|| {
            let text = Catalogue::builtin("cloud-deletes").unwrap();
            Catalogue::parse("cloud-deletes.toml", text).unwrap()
        })
        .clone()
    }

    #[test]
    fn the_builtin_catalogue_loads_quickly() {
        let text = Catalogue::builtin("cloud-deletes").unwrap();
        let t = std::time::Instant::now();
        Catalogue::parse("cloud-deletes.toml", text).unwrap();
        let parse = t.elapsed();
        let cat = builtin();
        let auth = sigv4("ec2");
        let r = req(
            "POST https://ec2.amazonaws.com/",
            &[("authorization", &auth), ("content-type", FORM)],
            "Action=DescribeInstances",
        );
        let t = std::time::Instant::now();
        for _ in 0..1000 {
            assert!(cat.needs_body(&r.view()));
            assert!(cat.classify(&r.view()).is_none());
        }
        eprintln!(
            "parse {parse:?}, needs_body + classify {:?}",
            t.elapsed() / 1000
        );
    }

    /// A request from `METHOD URL`, headers and body.
    fn req(line: &str, headers: &[(&str, &str)], body: &str) -> OwnedRequest {
        let mut r = parse_request_line(line).unwrap();
        for (k, v) in headers {
            r.headers.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        r.body = body.as_bytes().to_vec();
        r
    }

    fn sigv4(service: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/{service}/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature=abc"
        )
    }

    const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";

    fn classify(r: &OwnedRequest) -> Option<Match> {
        builtin().classify(&r.view())
    }

    fn needs_body(r: &OwnedRequest) -> bool {
        let mut probe = r.clone();
        probe.body.clear();
        builtin().needs_body(&probe.view())
    }

    #[test]
    fn builtin_catalogue_examples_match_their_rule_and_near_misses_match_nothing() {
        let cat = builtin();
        assert!(cat.len() >= 40, "{} rules", cat.len());
        let mut examples = 0;
        for rule in &cat.rules {
            assert!(
                !rule.examples.is_empty() && !rule.near_misses.is_empty(),
                "{}",
                rule.id
            );
            for e in &rule.examples {
                let m = cat.classify(&e.req.view());
                assert_eq!(
                    m.as_ref().map(|m| m.rule.as_str()),
                    Some(rule.id.as_str()),
                    "{e:?}"
                );
                if let (Some(want), Some(m)) = (&e.description, &m) {
                    assert_eq!(&m.description, want);
                }
                // Whatever the body, deciding to read it must not lose the match: the proxy
                // reads it whenever the rule could depend on it.
                let mut probe = e.req.clone();
                probe.body.clear();
                let without_body = cat.classify(&probe.view()).map(|m| m.rule);
                if without_body.as_deref() != Some(rule.id.as_str())
                    || rule.reads_body(&Cx::new(&probe.view(), &cat.s3_hosts, false))
                {
                    assert!(
                        cat.needs_body(&probe.view()),
                        "{} needs the body of {e:?}",
                        rule.id
                    );
                }
                examples += 1;
            }
            for e in &rule.near_misses {
                assert_eq!(
                    cat.classify(&e.req.view()),
                    None,
                    "near miss of {}: {e:?}",
                    rule.id
                );
            }
        }
        assert!(examples >= 80, "{examples} examples");
    }

    #[test]
    fn ec2_terminate_instances_on_a_custom_endpoint_is_held_with_its_instance_ids() {
        let auth = sigv4("ec2");
        let r = req(
            "POST http://localhost:4566/",
            &[("authorization", &auth), ("content-type", FORM)],
            "Action=TerminateInstances&Version=2016-11-15&InstanceId.1=i-0abc&InstanceId.2=i-0def",
        );
        assert!(needs_body(&r));
        let m = classify(&r).unwrap();
        assert_eq!(m.rule, "aws-ec2-delete");
        assert_eq!(m.description, "EC2 TerminateInstances: i-0abc, i-0def");
    }

    #[test]
    fn ec2_describe_instances_is_not_held() {
        let auth = sigv4("ec2");
        let r = req(
            "POST http://localhost:4566/",
            &[("authorization", &auth), ("content-type", FORM)],
            "Action=DescribeInstances&InstanceId.1=i-0abc",
        );
        assert!(needs_body(&r), "the action is in the body");
        assert_eq!(classify(&r), None);
    }

    #[test]
    fn query_actions_are_decoded_and_compared_ignoring_case() {
        let auth = sigv4("ec2");
        let r = req(
            "POST https://ec2.amazonaws.com/",
            &[("Authorization", &auth)],
            "action=terminate%49nstances&InstanceId.1=i-0a+b%2Fc",
        );
        let m = classify(&r).unwrap();
        assert_eq!(m.description, "EC2 terminateInstances: i-0a b/c");
    }

    #[test]
    fn unsigned_query_action_to_a_non_aws_host_is_not_held() {
        // Decided: AWS Query rules need a SigV4 (or S3 SigV2) signature; an unsigned request
        // cannot act on AWS, and `Action=Delete...` is too common a parameter elsewhere.
        let r = req(
            "POST https://app.example.com/",
            &[("content-type", FORM)],
            "Action=TerminateInstances&InstanceId.1=i-0abc",
        );
        assert_eq!(classify(&r), None);
        assert!(!needs_body(&r));
    }

    #[test]
    fn dynamodb_delete_table_names_the_table() {
        let auth = sigv4("dynamodb");
        let r = req(
            "POST https://dynamodb.us-east-1.amazonaws.com/",
            &[
                ("authorization", &auth),
                ("x-amz-target", "DynamoDB_20120810.DeleteTable"),
                ("content-type", "application/x-amz-json-1.0"),
            ],
            r#"{"TableName":"Music"}"#,
        );
        assert!(needs_body(&r));
        let m = classify(&r).unwrap();
        assert_eq!(
            (m.rule.as_str(), m.description.as_str()),
            ("aws-dynamodb-delete", "DynamoDB DeleteTable: Music")
        );
        let put = req(
            "POST https://dynamodb.us-east-1.amazonaws.com/",
            &[
                ("authorization", &auth),
                ("x-amz-target", "DynamoDB_20120810.PutItem"),
            ],
            r#"{"TableName":"Music"}"#,
        );
        assert!(!needs_body(&put), "PutItem bodies are not buffered");
        assert_eq!(classify(&put), None);
    }

    #[test]
    fn s3_bucket_and_object_deletes_are_held_in_both_addressing_styles() {
        let auth = sigv4("s3");
        let h = [("authorization", auth.as_str())];
        let cases = [
            (
                "DELETE https://s3.amazonaws.com/my-bucket",
                "aws-s3-delete-bucket",
                "S3 DeleteBucket: my-bucket",
            ),
            (
                "DELETE http://localhost:9000/my-bucket/",
                "aws-s3-delete-bucket",
                "S3 DeleteBucket: my-bucket",
            ),
            (
                "DELETE https://my-bucket.s3.amazonaws.com/",
                "aws-s3-delete-bucket",
                "S3 DeleteBucket: my-bucket",
            ),
            (
                "DELETE https://my.dotted.bucket.s3.eu-west-1.amazonaws.com/",
                "aws-s3-delete-bucket",
                "S3 DeleteBucket: my.dotted.bucket",
            ),
            (
                "DELETE https://s3.amazonaws.com/my-bucket/a/b.txt",
                "aws-s3-delete-object",
                "S3 DeleteObject: my-bucket/a/b.txt",
            ),
            (
                "DELETE https://my-bucket.s3.amazonaws.com/a/b.txt",
                "aws-s3-delete-object",
                "S3 DeleteObject: my-bucket/a/b.txt",
            ),
            (
                "DELETE http://localhost:4566/my-bucket/..",
                "aws-s3-delete-object",
                "S3 DeleteObject: my-bucket/..",
            ),
        ];
        for (line, rule, description) in cases {
            let r = req(line, &h, "");
            let m = classify(&r).unwrap_or_else(|| panic!("{line}"));
            assert_eq!(
                (m.rule.as_str(), m.description.as_str()),
                (rule, description),
                "{line}"
            );
            assert!(!needs_body(&r), "{line}");
        }
    }

    #[test]
    fn s3_batch_delete_is_held_and_counts_the_objects() {
        let auth = sigv4("s3");
        let body = "<Delete><Object><Key>a</Key></Object><Object><Key>b&amp;c</Key></Object>\
                    <Object><Key><![CDATA[d<e]]></Key></Object></Delete>";
        for line in [
            "POST https://s3.amazonaws.com/my-bucket?delete",
            "POST https://my-bucket.s3.amazonaws.com/?delete=",
        ] {
            let r = req(
                line,
                &[
                    ("authorization", &auth),
                    ("content-type", "application/xml"),
                ],
                body,
            );
            assert!(needs_body(&r), "the description counts the objects");
            let m = classify(&r).unwrap();
            assert_eq!(
                m.description,
                "S3 DeleteObjects: 3 objects in my-bucket (Key=a, b&c, d<e)"
            );
            // Held even when the body could not be read.
            let mut empty = r.clone();
            empty.body.clear();
            assert_eq!(
                classify(&empty).unwrap().description,
                "S3 DeleteObjects: 0 objects in my-bucket"
            );
        }
    }

    #[test]
    fn s3_get_and_put_are_not_held_and_not_buffered() {
        let auth = sigv4("s3");
        for line in [
            "GET https://my-bucket.s3.amazonaws.com/a.txt",
            "PUT https://my-bucket.s3.amazonaws.com/a.txt",
            "PUT https://s3.amazonaws.com/my-bucket",
            "GET https://s3.amazonaws.com/my-bucket?list-type=2",
            "POST https://my-bucket.s3.amazonaws.com/a.txt?uploads",
        ] {
            let r = req(line, &[("authorization", &auth)], "data");
            assert_eq!(classify(&r), None, "{line}");
            assert!(!needs_body(&r), "{line}");
        }
    }

    #[test]
    fn s3_sigv2_and_presigned_requests_are_recognised() {
        let v2 = req(
            "DELETE http://minio.local:9000/bkt/k",
            &[("authorization", "AWS AKID:c2ln")],
            "",
        );
        assert_eq!(classify(&v2).unwrap().rule, "aws-s3-delete-object");
        let pre = req(
            "DELETE https://bkt.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=00",
            &[],
            "",
        );
        assert_eq!(
            classify(&pre).unwrap().description,
            "S3 DeleteObject: bkt/k"
        );
    }

    #[test]
    fn rds_delete_db_instance_shows_skip_final_snapshot() {
        let auth = sigv4("rds");
        let r = req(
            "POST https://rds.us-east-1.amazonaws.com/",
            &[("authorization", &auth), ("content-type", FORM)],
            "Action=DeleteDBInstance&DBInstanceIdentifier=db1&SkipFinalSnapshot=true&Version=2014-10-31",
        );
        assert_eq!(
            classify(&r).unwrap().description,
            "RDS DeleteDBInstance: db1 (SkipFinalSnapshot=true)"
        );
    }

    #[test]
    fn a_plain_get_never_matches() {
        let cat = builtin();
        for line in [
            "GET https://ec2.amazonaws.com/",
            "GET https://s3.amazonaws.com/my-bucket/key",
            "GET https://api.github.com/repos/acme/web",
            "GET https://management.azure.com/subscriptions/0/resourcegroups/rg",
            "GET https://10.0.0.1:6443/api/v1/namespaces/prod/pods",
            "GET https://compute.googleapis.com/compute/v1/projects/p:delete",
            "GET https://api.machines.dev/v1/apps/shop",
            "GET https://example.com/?Action=DeleteVolume",
        ] {
            let r = req(line, &[], "");
            assert_eq!(cat.classify(&r.view()), None, "{line}");
            assert!(!cat.needs_body(&r.view()), "{line}");
        }
    }

    #[test]
    fn needs_body_only_where_the_body_decides_or_names_things() {
        let ec2 = sigv4("ec2");
        let s3 = sigv4("s3");
        let r53 = sigv4("route53");
        let yes = [
            req(
                "POST https://localhost:4566/",
                &[("authorization", &ec2), ("content-type", FORM)],
                "",
            ),
            req(
                "POST https://localhost:4566/",
                &[("authorization", &ec2)],
                "",
            ),
            req(
                "POST https://route53.amazonaws.com/2013-04-01/hostedzone/Z1/rrset",
                &[("authorization", &r53)],
                "",
            ),
            req(
                "POST https://api.fly.io/graphql",
                &[("content-type", "application/json")],
                "",
            ),
            req(
                "POST https://s3.amazonaws.com/b?delete",
                &[("authorization", &s3)],
                "",
            ),
        ];
        for r in &yes {
            assert!(needs_body(r), "{r:?}");
        }
        let no = [
            req(
                "POST https://localhost:4566/",
                &[
                    ("authorization", &ec2),
                    ("content-type", "application/json"),
                ],
                "",
            ),
            req(
                "POST https://localhost:4566/",
                &[
                    ("authorization", &ec2),
                    ("content-type", FORM),
                    ("content-length", "0"),
                ],
                "",
            ),
            req(
                "PUT https://s3.amazonaws.com/b/k",
                &[("authorization", &s3)],
                "",
            ),
            req(
                "POST https://app.example.com/upload",
                &[("content-type", FORM)],
                "",
            ),
            req("DELETE https://api.github.com/repos/a/b", &[], ""),
            req(
                "GET https://localhost:4566/?Action=DescribeInstances",
                &[("authorization", &ec2)],
                "",
            ),
        ];
        for r in &no {
            assert!(!needs_body(r), "{r:?}");
        }
    }

    #[test]
    fn a_tunnelled_delete_is_matched_as_a_delete() {
        let r = req(
            "POST https://compute.googleapis.com/compute/v1/projects/p/zones/z/instances/vm-1",
            &[("X-HTTP-Method-Override", "delete")],
            "",
        );
        assert_eq!(classify(&r).unwrap().rule, "gcp-delete");
    }

    #[test]
    fn cleaned_paths_are_matched_too() {
        for line in [
            "DELETE https://api.github.com//repos/acme/web",
            "DELETE https://api.github.com/repos/acme/x/../web",
            "DELETE https://api.github.com/repos/acme/%77eb",
        ] {
            let m = classify(&req(line, &[], "")).unwrap();
            assert_eq!(m.description, "GitHub delete repository acme/web", "{line}");
        }
    }

    #[test]
    fn graphql_mutations_are_read_through_aliases_and_variables() {
        let body = r##"{"query": "# comment\nmutation Kill($a: ID!) { gone: deleteApp(appId: $a) { id } other: restartApp(x: [1, 2]) }", "variables": {"a": "shop"}}"##;
        let r = req("POST https://api.fly.io/graphql", &[], body);
        let m = classify(&r).unwrap();
        assert_eq!(
            m.description,
            "Fly GraphQL deleteApp(appId: \"shop\"), restartApp(x: [1, 2])"
        );
        let batched = format!("[{body}]");
        assert!(classify(&req("POST https://api.fly.io/graphql", &[], &batched)).is_some());
        let query = r#"{"query": "query { deleteApp { id } }"}"#;
        assert_eq!(
            classify(&req("POST https://api.fly.io/graphql", &[], query)),
            None
        );
    }

    #[test]
    fn descriptions_lose_control_characters_and_long_lists() {
        let auth = sigv4("ec2");
        let ids: Vec<String> = (1..=8).map(|i| format!("InstanceId.{i}=i-{i}")).collect();
        let r = req(
            "POST https://ec2.amazonaws.com/",
            &[("authorization", &auth)],
            &format!(
                "Action=TerminateInstances&{}&InstanceId.9=i-9%1B%5B2J%0Aok%E2%80%AEx",
                ids.join("&")
            ),
        );
        let d = classify(&r).unwrap().description;
        assert_eq!(
            d,
            "EC2 TerminateInstances: i-1, i-2, i-3, i-4, i-5 and 4 more"
        );
        let r = req(
            "POST https://ec2.amazonaws.com/",
            &[("authorization", &auth)],
            "Action=DeleteVolume&VolumeId=v%1B%5B2J%0Aok%E2%80%AEx",
        );
        assert_eq!(
            classify(&r).unwrap().description,
            "EC2 DeleteVolume: v [2J ok x"
        );
    }

    #[test]
    fn aws_scope_reads_the_header_the_presigned_query_and_sigv4a() {
        let auth = "AWS4-HMAC-SHA256 Credential=AKID/20260101/eu-west-1/S3/aws4_request, SignedHeaders=host, Signature=1";
        let r = req("GET https://x/", &[("authorization", auth)], "");
        assert_eq!(
            aws_scope(&r.view()),
            Some(("s3".into(), "eu-west-1".into()))
        );
        let a = "AWS4-ECDSA-P256-SHA256 Credential=AKID/20260101/s3/aws4_request, SignedHeaders=host, Signature=1";
        let r = req(
            "GET https://x/",
            &[
                ("authorization", a),
                ("x-amz-region-set", "us-east-1,us-west-2"),
            ],
            "",
        );
        assert_eq!(
            aws_scope(&r.view()),
            Some(("s3".into(), "us-east-1,us-west-2".into()))
        );
        let r = req(
            "GET https://x/k?X-Amz-Credential=AKID%2F20260101%2Fap-south-1%2Flambda%2Faws4_request",
            &[],
            "",
        );
        assert_eq!(
            aws_scope(&r.view()),
            Some(("lambda".into(), "ap-south-1".into()))
        );
        for bad in [
            "Bearer abc",
            "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/s3",
            "AWS AKID:sig",
        ] {
            let r = req("GET https://x/", &[("authorization", bad)], "");
            assert_eq!(aws_scope(&r.view()), None, "{bad}");
        }
    }

    #[test]
    fn denied_responses_are_shaped_for_the_client() {
        let ec2 = sigv4("ec2");
        let q = req(
            "POST https://ec2.amazonaws.com/",
            &[("authorization", &ec2), ("content-type", FORM)],
            "Action=TerminateInstances",
        );
        let (status, ctype, body) =
            denied_response(&q.view(), "h7", "EC2 TerminateInstances: i-<1>");
        assert_eq!((status, ctype), (403, "text/xml"));
        assert!(
            body.contains(
                "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>"
            ),
            "{body}"
        );
        assert!(
            body.contains("i-&lt;1&gt;")
                && body.contains("hold h7")
                && body.contains("<RequestId>h7</RequestId>"),
            "{body}"
        );

        let ddb = sigv4("dynamodb");
        let j = req(
            "POST https://dynamodb.amazonaws.com/",
            &[
                ("authorization", &ddb),
                ("x-amz-target", "DynamoDB_20120810.DeleteTable"),
            ],
            "{}",
        );
        let (status, ctype, body) = denied_response(&j.view(), "h8", "DynamoDB DeleteTable: Music");
        assert_eq!((status, ctype), (403, "application/x-amz-json-1.0"));
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["__type"], "AccessDeniedException");
        assert!(v["message"].as_str().unwrap().contains(
            "held by the sandbox policy and denied: DynamoDB DeleteTable: Music (hold h8)"
        ));

        let s3 = sigv4("s3");
        let s = req(
            "DELETE https://b.s3.amazonaws.com/k",
            &[("authorization", &s3)],
            "",
        );
        let (status, ctype, body) = denied_response(&s.view(), "h9", "S3 DeleteObject: b/k");
        assert_eq!((status, ctype), (403, "application/xml"));
        assert!(body.contains("<Error><Code>AccessDenied</Code><Message>held by the sandbox policy and denied: S3 DeleteObject: b/k (hold h9)</Message>"), "{body}");

        let lambda = sigv4("lambda");
        let l = req(
            "DELETE https://lambda.amazonaws.com/2015-03-31/functions/f",
            &[("authorization", &lambda)],
            "",
        );
        let (_, ctype, body) = denied_response(&l.view(), "h1", "x");
        assert_eq!(ctype, "application/json");
        assert!(body.contains("AccessDeniedException"));

        let gh = req("DELETE https://api.github.com/repos/a/b", &[], "");
        let (status, ctype, body) =
            denied_response(&gh.view(), "h2", "GitHub delete repository a/b");
        assert_eq!((status, ctype), (403, "application/json"));
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "held_denied");
        assert!(v["message"]
            .as_str()
            .unwrap()
            .contains("GitHub delete repository a/b (hold h2)"));
        assert!(v.get("kind").is_none());

        let k = req(
            "DELETE https://10.0.0.1:6443/api/v1/namespaces/prod",
            &[],
            "",
        );
        let v: Value = serde_json::from_str(&denied_response(&k.view(), "h3", "x").2).unwrap();
        assert_eq!(
            (v["kind"].as_str(), v["reason"].as_str(), v["code"].as_u64()),
            (Some("Status"), Some("Forbidden"), Some(403))
        );

        let g = req(
            "DELETE https://compute.googleapis.com/compute/v1/x",
            &[],
            "",
        );
        let v: Value = serde_json::from_str(&denied_response(&g.view(), "h4", "x").2).unwrap();
        assert_eq!(v["error"]["status"], "PERMISSION_DENIED");
    }

    #[test]
    fn parse_errors_say_where_and_what() {
        let ok_rule = "[[rule]]\nid = \"r\"\ndescription = \"d\"\nmethod = [\"DELETE\"]\n\
                       examples = [{ request = \"DELETE https://x/\" }]\n\
                       near_misses = [{ request = \"GET https://x/\" }]\n";
        assert_eq!(Catalogue::parse("t.toml", ok_rule).unwrap().len(), 1);
        let cases = [
            (
                ok_rule.replace("method", "methd"),
                "t.toml:4:1: rule[0].methd: unknown field `methd`",
            ),
            (
                ok_rule.replace("examples = [{ request = \"DELETE https://x/\" }]\n", ""),
                "t.toml:1:1: rule r: no examples",
            ),
            (
                ok_rule.replace("near_misses = [{ request = \"GET https://x/\" }]\n", ""),
                "t.toml:1:1: rule r: no near_misses",
            ),
            (
                ok_rule.replace("GET https://x/", "DELETE https://y/"),
                "t.toml:6:16: rule r: near miss 1 matches rule r",
            ),
            (
                ok_rule.replace("DELETE https://x/\" }", "PUT https://x/\" }"),
                "t.toml:5:13: rule r: example 1 matches no rule",
            ),
            (
                ok_rule.replace("\"d\"", "\"{nope}\""),
                "t.toml:3:15: rule r: description: unknown value `nope`",
            ),
            (
                ok_rule.replace("\"d\"", "\"{param:Action\""),
                "t.toml:3:15: rule r: description: unclosed `{`",
            ),
            (
                ok_rule.replace("DELETE\"]", "DE LETE\"]"),
                "t.toml:4:11: rule r: method: \"DE LETE\" is not an HTTP method",
            ),
            (
                format!("{ok_rule}{ok_rule}"),
                "t.toml:8:6: id: \"r\" is used by an earlier rule",
            ),
            (
                ok_rule.replace("method = [\"DELETE\"]", "path = [\"nope\"]"),
                "t.toml:4:9: rule r: path: \"nope\": a path template begins with `/`",
            ),
            (
                ok_rule.replace("method = [\"DELETE\"]\n", ""),
                "t.toml:1:1: rule r: no conditions",
            ),
            ("x = 1".to_string(), "t.toml:1:1: x: unknown field `x`"),
            (String::new(), "t.toml:1:1: no [[rule]] in the catalogue"),
        ];
        for (text, want) in cases {
            let e = Catalogue::parse("t.toml", &text).unwrap_err();
            assert!(e.starts_with(want), "got {e:?}\nwant {want:?}");
        }
    }

    #[test]
    fn extend_replaces_a_rule_of_the_same_id_in_its_place() {
        let mut cat = builtin();
        let n = cat.len();
        let first = cat.rules[0].id.clone();
        let mine = format!(
            "[[rule]]\nid = \"{first}\"\ndescription = \"mine\"\nmethod = [\"PURGE\"]\n\
             examples = [{{ request = \"PURGE https://x/\" }}]\nnear_misses = [{{ request = \"GET https://x/\" }}]\n\
             [[rule]]\nid = \"new\"\ndescription = \"new\"\nmethod = [\"NUKE\"]\n\
             examples = [{{ request = \"NUKE https://x/\" }}]\nnear_misses = [{{ request = \"GET https://x/\" }}]\n"
        );
        cat.extend(Catalogue::parse("mine.toml", &mine).unwrap());
        assert_eq!(cat.len(), n + 1);
        assert_eq!(cat.rules[0].id, first);
        assert_eq!(
            cat.classify(&req("PURGE https://x/", &[], "").view())
                .unwrap()
                .description,
            "mine"
        );
        assert_eq!(cat.rules[n].id, "new");
        assert!(Catalogue::default().is_empty());
    }

    #[test]
    fn user_catalogues_can_add_s3_virtual_hosts() {
        let text = "s3_virtual_hosts = [\"{bucket}.minio.example.com\"]\n\
                    [[rule]]\nid = \"s3-del\"\ndescription = \"{bucket}/{key}\"\nmethod = [\"DELETE\"]\ns3 = \"object\"\n\
                    examples = [{ request = \"DELETE https://b1.minio.example.com/k1\", description = \"b1/k1\" }]\n\
                    near_misses = [{ request = \"DELETE https://minio.example.com/b1\" }]\n";
        let cat = Catalogue::parse("m.toml", text).unwrap();
        assert_eq!(cat.len(), 1);
        let e =
            Catalogue::parse("m.toml", &text.replace("{bucket}.minio", "{b}.minio")).unwrap_err();
        assert!(
            e.starts_with("m.toml:1:21: s3_virtual_hosts: the template must capture {bucket}"),
            "{e}"
        );
    }

    #[test]
    fn a_catalogue_can_be_shared_between_tasks() {
        fn shared<T: Send + Sync + Clone + std::fmt::Debug + Default>() {}
        shared::<Catalogue>();
    }

    #[test]
    fn the_builtin_catalogue_is_known_by_name_only() {
        assert!(Catalogue::builtin("cloud-deletes").is_some());
        assert!(Catalogue::builtin("nope").is_none());
    }
}
