//! Policy rules in the Cedar language (SPEC P1): the schema of Capsule's
//! principals, actions and resources, the default policy set, loading and
//! validating policy files, and answering "may P do A on R".
//!
//! Cedar gives default deny and forbid-over-permit. Paths are resolved
//! lexically ("." and ".." removed) before any rule sees them, so a rule on
//! `/var/log/capsule/*.log` cannot be escaped with `..`.

use crate::error::{PolicyError, Result};
use crate::lanes::Lane;
use cedar_policy::{
    ActionConstraint, Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, Policy, PolicyId, PolicySet, PrincipalConstraint, ResourceConstraint,
    RestrictedExpression, Schema, ValidationMode, Validator,
};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

/// The Cedar schema every policy is validated against.
pub const SCHEMA: &str = include_str!("defaults/capsule.cedarschema");
/// The default policy set, as shipped.
pub const DEFAULT_POLICIES: &str = include_str!("defaults/default.cedar");
/// The file name the default set is written under.
pub const DEFAULT_FILE: &str = "default.cedar";
/// Largest policy file read, in bytes.
pub const MAX_POLICY_FILE: u64 = 1 << 20;
/// Most policy files in a directory.
pub const MAX_POLICY_FILES: usize = 256;
/// Largest resource text, in bytes (the ledger's subject limit).
pub const MAX_NAME_LEN: usize = capsule_ledger::entry::MAX_SUBJECT_LEN;
/// Largest principal text, in bytes (the ledger's actor limit).
pub const MAX_PRINCIPAL_LEN: usize = capsule_ledger::entry::MAX_NAME_LEN;

/// The actions of the schema.
pub const ACTIONS: &[&str] = &[
    "brain.step",
    "brain.measure",
    "memory.append",
    "plan.explain",
    "task.submit",
    "selfedit.propose",
    "selfedit.approve",
    "selfedit.apply",
    "system.exec",
    "net.open",
    "fs.read",
    "fs.write",
    "bus.publish",
    "object.delete",
];

/// `Capsule::<name>`, parsed once.
fn type_name(name: &str) -> EntityTypeName {
    static NAMES: OnceLock<HashMap<&'static str, EntityTypeName>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        PRINCIPALS
            .iter()
            .chain(RESOURCES)
            .map(|(_, t, _)| *t)
            .chain(["Action"])
            .map(|t| {
                (
                    t,
                    EntityTypeName::from_str(&format!("Capsule::{t}"))
                        .expect("schema type names parse"),
                )
            })
            .collect()
    });
    names[name].clone()
}

fn action_uid(action: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(type_name("Action"), EntityId::new(action))
}

/// The request context `{lane}`, built once per lane.
fn lane_context(lane: Lane) -> Context {
    static CONTEXTS: OnceLock<[Context; 3]> = OnceLock::new();
    let all = CONTEXTS.get_or_init(|| {
        [Lane::Experimental, Lane::Candidate, Lane::Prod].map(|l| {
            Context::from_pairs([(
                "lane".to_string(),
                RestrictedExpression::new_string(l.as_str().into()),
            )])
            .expect("a one-string context is valid")
        })
    });
    all[lane as usize].clone()
}

fn schema() -> &'static Arc<Schema> {
    static SCHEMA_CELL: OnceLock<Arc<Schema>> = OnceLock::new();
    SCHEMA_CELL.get_or_init(|| {
        let (schema, _warnings) =
            Schema::from_cedarschema_str(SCHEMA).expect("the built-in schema parses (tested)");
        Arc::new(schema)
    })
}

/// Principal kinds: `agent:NAME`, `operator:NAME`, `approver:NAME`.
const PRINCIPALS: &[(&str, &str, Option<&str>)] = &[
    ("agent", "Agent", None),
    ("operator", "Operator", None),
    ("approver", "Approver", None),
];
/// Resource kinds, and the attribute each carries (if any).
const RESOURCES: &[(&str, &str, Option<&str>)] = &[
    ("kernel", "Kernel", None),
    ("memory", "Memory", None),
    ("plan", "Plan", None),
    ("task", "Task", None),
    ("edit", "Edit", None),
    ("command", "Command", Some("program")),
    ("path", "Path", Some("path")),
    ("topic", "Topic", Some("name")),
    ("domain", "Domain", Some("host")),
    ("object", "Object", None),
];

/// A principal or resource, parsed from `kind:name` (e.g. `agent:alice`,
/// `path:/var/log/capsule/x.log`, `domain:example.com`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    kind: &'static str,
    type_name: &'static str,
    id: String,
    attr: Option<&'static str>,
}

impl Name {
    fn parse(
        field: &str,
        text: &str,
        table: &[(&'static str, &'static str, Option<&'static str>)],
    ) -> Result<Name> {
        let max = if field == "principal" {
            MAX_PRINCIPAL_LEN
        } else {
            MAX_NAME_LEN
        };
        if text.len() > max {
            return Err(PolicyError::invalid(
                field,
                format!("longer than {max} bytes"),
            ));
        }
        let (kind, id) = text
            .split_once(':')
            .ok_or_else(|| PolicyError::invalid(field, format!("{text:?} is not kind:name")))?;
        let &(kind, type_name, attr) =
            table.iter().find(|(k, _, _)| *k == kind).ok_or_else(|| {
                let kinds: Vec<&str> = table.iter().map(|(k, _, _)| *k).collect();
                PolicyError::invalid(
                    field,
                    format!("unknown kind {kind:?} (one of {})", kinds.join(", ")),
                )
            })?;
        if id.is_empty() || id.chars().any(char::is_control) {
            return Err(PolicyError::invalid(
                field,
                "name is empty or has control characters",
            ));
        }
        let id = if kind == "path" {
            normalize_path(id)?
        } else {
            id.to_string()
        };
        Ok(Name {
            kind,
            type_name,
            id,
            attr,
        })
    }

    /// Parse a principal.
    pub fn principal(text: &str) -> Result<Name> {
        Name::parse("principal", text, PRINCIPALS)
    }

    /// Parse a resource; a path is resolved.
    pub fn resource(text: &str) -> Result<Name> {
        Name::parse("resource", text, RESOURCES)
    }

    pub fn kind(&self) -> &str {
        self.kind
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn type_name(&self) -> EntityTypeName {
        type_name(self.type_name)
    }

    fn uid(&self) -> EntityUid {
        EntityUid::from_type_name_and_id(self.type_name(), EntityId::new(&self.id))
    }

    /// The entity with its attribute, if its type has one.
    fn entity(&self) -> Option<Entity> {
        let attr = self.attr?;
        let attrs = HashMap::from([(
            attr.to_string(),
            RestrictedExpression::new_string(self.id.clone()),
        )]);
        Some(
            Entity::new(self.uid(), attrs, HashSet::new())
                .expect("string attributes always evaluate"),
        )
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.id)
    }
}

/// Resolve "." and ".." in an absolute path, lexically (".." at the root
/// stays at the root, as POSIX says), and collapse repeated slashes.
pub fn normalize_path(path: &str) -> Result<String> {
    if !path.starts_with('/') {
        return Err(PolicyError::invalid(
            "resource",
            format!("path {path:?} is not absolute"),
        ));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// One policy of a set: its id, effect and where it was written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicyInfo {
    pub id: String,
    pub effect: &'static str,
    pub file: String,
    pub line: usize,
}

/// What the rules say about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleAnswer {
    pub allowed: bool,
    /// The policies that decided: the satisfied permits when allowed, the
    /// satisfied forbids when denied (empty: no permit matched).
    pub policies: Vec<String>,
    /// Policies that failed to evaluate (they count as not satisfied).
    pub errors: Vec<String>,
}

/// Where a policy's scope puts it for one (action, principal type,
/// resource type): never matching, matching any entity of the type, or
/// matching one entity only (there is no entity hierarchy, so `in E`
/// matches E alone).
enum Fit {
    Never,
    Any,
    Only(EntityUid),
}

fn principal_fit(c: &PrincipalConstraint, ty: &EntityTypeName) -> Fit {
    match c {
        PrincipalConstraint::Any => Fit::Any,
        PrincipalConstraint::Is(t) if t == ty => Fit::Any,
        PrincipalConstraint::Eq(u) | PrincipalConstraint::In(u) if u.type_name() == ty => {
            Fit::Only(u.clone())
        }
        PrincipalConstraint::IsIn(t, u) if t == ty && u.type_name() == ty => Fit::Only(u.clone()),
        _ => Fit::Never,
    }
}

fn resource_fit(c: &ResourceConstraint, ty: &EntityTypeName) -> Fit {
    match c {
        ResourceConstraint::Any => Fit::Any,
        ResourceConstraint::Is(t) if t == ty => Fit::Any,
        ResourceConstraint::Eq(u) | ResourceConstraint::In(u) if u.type_name() == ty => {
            Fit::Only(u.clone())
        }
        ResourceConstraint::IsIn(t, u) if t == ty && u.type_name() == ty => Fit::Only(u.clone()),
        _ => Fit::Never,
    }
}

/// The policies that can apply to one (action, principal type, resource
/// type), split so that a request evaluates only those whose scope can
/// match it. Evaluating a superset of the matching policies gives Cedar's
/// answer exactly; evaluating fewer is what makes a decision cheap.
#[derive(Default)]
struct Slice {
    any: Arc<PolicySet>,
    any_list: Vec<Policy>,
    by_principal: HashMap<EntityUid, Vec<Policy>>,
    by_resource: HashMap<EntityUid, Vec<Policy>>,
    /// Policies that hold only when the resource's attribute starts with
    /// the prefix (see [`attribute_guard`]).
    guarded: Vec<(String, Policy)>,
}

/// The conjuncts of an EST condition body.
fn conjuncts<'a>(body: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
    match body.get("&&") {
        Some(and) => {
            conjuncts(&and["left"], out);
            conjuncts(&and["right"], out);
        }
        None => out.push(body),
    }
}

/// If a `when` condition of `policy` requires `resource.<attr>` to match a
/// `like` pattern (or equal a string), the literal prefix that any matching
/// value starts with, and the attribute. A policy with such a guard cannot
/// be satisfied for a resource whose attribute lacks the prefix, so it need
/// not be evaluated for it.
fn attribute_guard(policy: &Policy) -> Option<(String, String)> {
    let est = policy.to_json().ok()?;
    let resource_attr = |v: &serde_json::Value| -> Option<String> {
        let dot = v.get(".")?;
        (dot["left"].get("Var")?.as_str()? == "resource")
            .then(|| dot["attr"].as_str().map(str::to_string))?
    };
    let mut best: Option<(String, String)> = None;
    for cond in est["conditions"].as_array()? {
        if cond["kind"] != "when" {
            continue;
        }
        let mut parts = Vec::new();
        conjuncts(&cond["body"], &mut parts);
        for part in parts {
            let found = if let Some(like) = part.get("like") {
                let attr = resource_attr(&like["left"]);
                let prefix: String = like["pattern"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map_while(|el| el.get("Literal").and_then(|l| l.as_str()))
                    .collect();
                attr.map(|a| (a, prefix))
            } else if let Some(eq) = part.get("==") {
                let attr = resource_attr(&eq["left"]);
                let value = eq["right"]
                    .get("Value")
                    .and_then(|v| v.as_str())
                    .map(str::to_string);
                attr.zip(value)
            } else {
                None
            };
            if let Some((attr, prefix)) = found {
                if best.as_ref().is_none_or(|(_, b)| prefix.len() > b.len()) {
                    best = Some((attr, prefix));
                }
            }
        }
    }
    best.filter(|(_, prefix)| !prefix.is_empty())
}

/// Most cached per-entity policy sets.
const MAX_CACHED_SETS: usize = 4096;

/// A validated set of Cedar policies with its version.
pub struct RuleSet {
    /// Every policy; decisions use the slices, a test checks them against this.
    #[cfg(test)]
    all: PolicySet,
    info: Vec<PolicyInfo>,
    version: String,
    slices: HashMap<(&'static str, &'static str, &'static str), Slice>,
    /// (action, principal, resource type, resource) → the union of a slice
    /// and its entity-specific policies.
    cache: std::sync::Mutex<HashMap<(String, EntityUid, EntityUid), Arc<PolicySet>>>,
    authorizer: Authorizer,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RuleSet(version {}, {} policies)",
            self.version,
            self.info.len()
        )
    }
}

fn build_slices(all: &PolicySet) -> HashMap<(&'static str, &'static str, &'static str), Slice> {
    let schema = schema();
    let mut slices = HashMap::new();
    for &action in ACTIONS {
        let uid = action_uid(action);
        let principals: Vec<EntityTypeName> = schema
            .principals_for_action(&uid)
            .map(|it| it.cloned().collect())
            .unwrap_or_default();
        let resources: Vec<EntityTypeName> = schema
            .resources_for_action(&uid)
            .map(|it| it.cloned().collect())
            .unwrap_or_default();
        let applies: Vec<&Policy> = all
            .policies()
            .filter(|p| match p.action_constraint() {
                ActionConstraint::Any => true,
                ActionConstraint::Eq(a) => a == uid,
                ActionConstraint::In(list) => list.contains(&uid),
            })
            .collect();
        for &(_, pt, _) in PRINCIPALS {
            if !principals.contains(&type_name(pt)) {
                continue;
            }
            for &(_, rt, attr) in RESOURCES {
                if !resources.contains(&type_name(rt)) {
                    continue;
                }
                let mut slice = Slice::default();
                for p in &applies {
                    let pf = principal_fit(&p.principal_constraint(), &type_name(pt));
                    let rf = resource_fit(&p.resource_constraint(), &type_name(rt));
                    match (pf, rf) {
                        (Fit::Never, _) | (_, Fit::Never) => {}
                        (Fit::Only(u), _) => {
                            slice.by_principal.entry(u).or_default().push((*p).clone())
                        }
                        (Fit::Any, Fit::Only(u)) => {
                            slice.by_resource.entry(u).or_default().push((*p).clone())
                        }
                        (Fit::Any, Fit::Any) => {
                            match attribute_guard(p).filter(|(a, _)| Some(a.as_str()) == attr) {
                                Some((_, prefix)) => slice.guarded.push((prefix, (*p).clone())),
                                None => slice.any_list.push((*p).clone()),
                            }
                        }
                    }
                }
                slice.any = Arc::new(
                    PolicySet::from_policies(slice.any_list.iter().cloned())
                        .expect("ids are unique in the full set"),
                );
                slices.insert((action, pt, rt), slice);
            }
        }
    }
    slices
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// Byte offsets of the `permit` / `forbid` keywords that open each policy,
/// skipping comments and string literals.
fn statement_starts(text: &str) -> Vec<usize> {
    let b = text.as_bytes();
    let mut starts = Vec::new();
    let mut i = 0;
    let mut depth = 0usize;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'(' | b'{' | b'[' => depth += 1,
            b')' | b'}' | b']' => depth = depth.saturating_sub(1),
            _ if depth == 0
                && (text[i..].starts_with("permit") || text[i..].starts_with("forbid")) =>
            {
                let before_ok = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
                let after = text[i + 6..].trim_start();
                if before_ok && after.starts_with('(') {
                    starts.push(i);
                }
                i += 6;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    starts
}

/// The first labelled position of a diagnostic, as a line of `text`.
fn diagnostic_line(d: &dyn miette::Diagnostic, text: &str) -> usize {
    d.labels()
        .and_then(|mut l| l.next())
        .map_or(1, |label| line_of(text, label.offset()))
}

impl RuleSet {
    /// The default policy set.
    pub fn defaults() -> RuleSet {
        RuleSet::from_sources(&[(DEFAULT_FILE.to_string(), DEFAULT_POLICIES.to_string())])
            .expect("the default policy set validates (tested)")
    }

    /// Every `*.cedar` file of `dir`, in name order.
    pub fn load_dir(dir: &Path) -> Result<RuleSet> {
        let mut files = Vec::new();
        for item in std::fs::read_dir(dir).map_err(PolicyError::io(dir))? {
            let path = item.map_err(PolicyError::io(dir))?.path();
            if path.extension().is_some_and(|e| e == "cedar") {
                files.push(path);
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(PolicyError::invalid(
                "policy dir",
                format!("{} holds no *.cedar file", dir.display()),
            ));
        }
        if files.len() > MAX_POLICY_FILES {
            return Err(PolicyError::invalid(
                "policy dir",
                format!("more than {MAX_POLICY_FILES} policy files"),
            ));
        }
        let mut sources = Vec::with_capacity(files.len());
        for path in files {
            let len = std::fs::metadata(&path)
                .map_err(PolicyError::io(&path))?
                .len();
            if len > MAX_POLICY_FILE {
                return Err(PolicyError::PolicyFile {
                    file: path.display().to_string(),
                    line: 1,
                    reason: format!("{len} bytes exceeds the limit of {MAX_POLICY_FILE}"),
                });
            }
            let text = std::fs::read_to_string(&path).map_err(PolicyError::io(&path))?;
            sources.push((path.display().to_string(), text));
        }
        RuleSet::from_sources(&sources)
    }

    /// Parse and validate (file name, text) pairs. Policy ids come from an
    /// `@id("...")` annotation, else `<file stem>#<n>`; they must be unique.
    pub fn from_sources(sources: &[(String, String)]) -> Result<RuleSet> {
        let validator = Validator::new(schema().as_ref().clone());
        let mut all = PolicySet::new();
        let mut info = Vec::new();
        let mut hasher = Sha256::new();
        for (file, text) in sources {
            let err = |line: usize, reason: String| PolicyError::PolicyFile {
                file: file.clone(),
                line,
                reason,
            };
            let parsed = PolicySet::from_str(text).map_err(|e| {
                let first = e.iter().next();
                let line = first.map_or(1, |d| diagnostic_line(d, text));
                let reason = first.map_or_else(|| e.to_string(), |d| d.to_string());
                err(line, reason)
            })?;
            let stem = Path::new(file)
                .file_stem()
                .map_or("policy".into(), |s| s.to_string_lossy().into_owned());
            let mut ours = PolicySet::new();
            // The parser names policies policy0, policy1, … in source order.
            let mut policies: Vec<&Policy> = parsed.policies().collect();
            policies.sort_by_key(|p| {
                p.id()
                    .to_string()
                    .trim_start_matches("policy")
                    .parse::<usize>()
                    .unwrap_or(0)
            });
            let starts = statement_starts(text);
            for (n, policy) in policies.into_iter().enumerate() {
                let line = starts.get(n).map_or(1, |&at| line_of(text, at));
                let id = policy
                    .annotation("id")
                    .map_or_else(|| format!("{stem}#{n}"), str::to_string);
                if info.iter().any(|i: &PolicyInfo| i.id == id) {
                    return Err(err(line, format!("policy id {id:?} is already used")));
                }
                let renamed = policy.new_id(PolicyId::new(&id));
                ours.add(renamed.clone())
                    .map_err(|e| err(line, e.to_string()))?;
                all.add(renamed).map_err(|e| err(line, e.to_string()))?;
                let effect = match policy.effect() {
                    cedar_policy::Effect::Permit => "permit",
                    cedar_policy::Effect::Forbid => "forbid",
                };
                info.push(PolicyInfo {
                    id,
                    effect,
                    file: file.clone(),
                    line,
                });
            }
            let result = validator.validate(&ours, ValidationMode::Strict);
            if let Some(e) = result.validation_errors().next() {
                return Err(err(
                    diagnostic_line(e, text),
                    format!("policy {:?}: {e}", e.policy_id().to_string()),
                ));
            }
            hasher.update((file.len() as u64).to_be_bytes());
            hasher.update(
                Path::new(file)
                    .file_name()
                    .map_or(file.as_bytes(), |n| n.as_encoded_bytes()),
            );
            hasher.update((text.len() as u64).to_be_bytes());
            hasher.update(text.as_bytes());
        }
        let version = hex::encode(&hasher.finalize()[..12]);
        Ok(RuleSet {
            info,
            version,
            slices: build_slices(&all),
            #[cfg(test)]
            all,
            cache: Default::default(),
            authorizer: Authorizer::new(),
        })
    }

    /// A short hash of the policy texts and file names: the policy version
    /// that approvals and decisions record.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn policies(&self) -> &[PolicyInfo] {
        &self.info
    }

    /// The policies to evaluate for this request: its slice, plus the
    /// policies written for this principal or resource.
    fn policies_for(
        &self,
        slice: &Slice,
        action: &str,
        principal: &EntityUid,
        resource: &Name,
        resource_uid: &EntityUid,
    ) -> Arc<PolicySet> {
        let by_p = slice.by_principal.get(principal);
        let by_r = slice.by_resource.get(resource_uid);
        let guarded: Vec<&Policy> = slice
            .guarded
            .iter()
            .filter(|(prefix, _)| resource.id.starts_with(prefix.as_str()))
            .map(|(_, p)| p)
            .collect();
        if by_p.is_none() && by_r.is_none() && guarded.is_empty() {
            return slice.any.clone();
        }
        let resource = resource_uid;
        let key = (action.to_string(), principal.clone(), resource.clone());
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(set) = cache.get(&key) {
            return set.clone();
        }
        let policies = slice
            .any_list
            .iter()
            .chain(by_p.into_iter().flatten())
            .chain(by_r.into_iter().flatten())
            .chain(guarded);
        let set = Arc::new(
            PolicySet::from_policies(policies.cloned()).expect("ids are unique in the full set"),
        );
        if cache.len() < MAX_CACHED_SETS {
            cache.insert(key, set.clone());
        }
        set
    }

    /// May `principal` do `action` on `resource` in `lane`?
    pub fn evaluate(
        &self,
        principal: &Name,
        action: &str,
        resource: &Name,
        lane: Lane,
    ) -> Result<RuleAnswer> {
        let Some(&action) = ACTIONS.iter().find(|a| **a == action) else {
            return Err(PolicyError::invalid(
                "action",
                format!("unknown action {action:?}"),
            ));
        };
        let slice = self.slices.get(&(action, principal.type_name, resource.type_name)).ok_or_else(|| {
            PolicyError::invalid(
                "request",
                format!("{action} by {principal} on {resource}: the schema does not allow a {} to {action} a {}", principal.kind, resource.kind),
            )
        })?;
        let (p_uid, r_uid) = (principal.uid(), resource.uid());
        let policies = self.policies_for(slice, action, &p_uid, resource, &r_uid);
        let context = lane_context(lane);
        // The schema check was done by the slice lookup; the context shape is ours.
        let request = cedar_policy::Request::new(p_uid, action_uid(action), r_uid, context, None)
            .map_err(|e| {
            PolicyError::invalid(
                "request",
                format!("{action} by {principal} on {resource}: {e}"),
            )
        })?;
        let entities = Entities::from_entities(resource.entity(), None)
            .map_err(|e| PolicyError::invalid("request", e.to_string()))?;
        let response = self
            .authorizer
            .is_authorized(&request, &policies, &entities);
        let mut decided: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|p| p.to_string())
            .collect();
        decided.sort();
        Ok(RuleAnswer {
            allowed: response.decision() == Decision::Allow,
            policies: decided,
            errors: response
                .diagnostics()
                .errors()
                .map(|e| e.to_string())
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(set: &RuleSet, p: &str, a: &str, r: &str) -> RuleAnswer {
        set.evaluate(
            &Name::principal(p).unwrap(),
            a,
            &Name::resource(r).unwrap(),
            Lane::Prod,
        )
        .unwrap()
    }

    /// Evaluating only a request's slice gives exactly what Cedar gives
    /// over the whole set, for rules with every kind of scope and guard.
    #[test]
    fn slices_decide_exactly_as_the_whole_set() {
        let mut text = DEFAULT_POLICIES.to_string();
        for i in 0..6 {
            text.push_str(&format!(
                "forbid(principal == Capsule::Agent::\"a{i}\", action, resource);\n\
                 permit(principal, action == Capsule::Action::\"bus.publish\", resource == Capsule::Topic::\"t{i}\");\n\
                 permit(principal in Capsule::Operator::\"o{i}\", action in [Capsule::Action::\"fs.read\", Capsule::Action::\"net.open\"], resource);\n\
                 forbid(principal, action == Capsule::Action::\"fs.read\", resource is Capsule::Path) when {{ resource.path like \"/srv/d{i}/*\" }};\n\
                 permit(principal, action, resource is Capsule::Path) when {{ resource.path == \"/srv/d{i}/ok\" && context.lane == \"prod\" }};\n\
                 permit(principal is Capsule::Operator, action == Capsule::Action::\"system.exec\", resource) when {{ resource.program like \"/usr/bin/{i}*\" }};\n"
            ));
        }
        let set = RuleSet::from_sources(&[("mix.cedar".into(), text)]).unwrap();
        let principals = [
            "agent:a1",
            "agent:a9",
            "operator:o2",
            "operator:o7",
            "approver:x",
        ];
        let resources = [
            "kernel:k",
            "topic:t3",
            "topic:t8",
            "path:/srv/d2/x",
            "path:/srv/d2/ok",
            "path:/srv/d9/ok",
            "path:/var/log/capsule/a.log",
            "domain:example.com",
            "command:/usr/bin/3ls",
            "command:/bin/sh",
            "edit:e",
        ];
        let mut checked = 0;
        for p in principals {
            for &a in ACTIONS {
                for r in resources {
                    for lane in [Lane::Prod, Lane::Experimental] {
                        let (pn, rn) = (Name::principal(p).unwrap(), Name::resource(r).unwrap());
                        let Ok(sliced) = set.evaluate(&pn, a, &rn, lane) else {
                            continue;
                        };
                        let request = cedar_policy::Request::new(
                            pn.uid(),
                            action_uid(a),
                            rn.uid(),
                            lane_context(lane),
                            None,
                        )
                        .unwrap();
                        let entities = Entities::from_entities(rn.entity(), None).unwrap();
                        let whole = Authorizer::new().is_authorized(&request, &set.all, &entities);
                        let mut ids: Vec<String> = whole
                            .diagnostics()
                            .reason()
                            .map(|p| p.to_string())
                            .collect();
                        ids.sort();
                        assert_eq!(
                            sliced.allowed,
                            whole.decision() == Decision::Allow,
                            "{p} {a} {r}"
                        );
                        assert_eq!(sliced.policies, ids, "{p} {a} {r}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 100, "{checked}");
    }

    #[test]
    fn paths_are_resolved_lexically() {
        assert_eq!(
            normalize_path("/var/log/capsule/../../etc/passwd").unwrap(),
            "/var/etc/passwd"
        );
        assert_eq!(normalize_path("/../../etc//x/./y").unwrap(), "/etc/x/y");
        assert_eq!(normalize_path("/").unwrap(), "/");
        assert!(normalize_path("etc/passwd").is_err());
    }

    #[test]
    fn names_parse_and_bad_kinds_are_named() {
        assert_eq!(
            Name::principal("agent:alice").unwrap().to_string(),
            "agent:alice"
        );
        let err = Name::resource("file:/x").unwrap_err().to_string();
        assert!(err.starts_with("resource: unknown kind \"file\""), "{err}");
        assert!(Name::principal("alice").is_err());
        assert!(Name::resource("path:").is_err());
        let long = format!("agent:{}", "a".repeat(300));
        assert!(Name::principal(&long)
            .unwrap_err()
            .to_string()
            .contains("longer than 256"));
    }

    #[test]
    fn the_defaults_validate_and_have_stable_ids() {
        let set = RuleSet::defaults();
        let ids: Vec<&str> = set.policies().iter().map(|p| p.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "allow-core",
                "deny-system-exec",
                "deny-net-open",
                "allow-capsule-logs",
                "deny-fs-write"
            ]
        );
        assert_eq!(set.policies()[0].line, 5);
        assert_eq!(set.version().len(), 24);
    }

    #[test]
    fn a_denial_names_the_forbidding_policy() {
        let set = RuleSet::defaults();
        let a = eval(&set, "agent:a", "net.open", "domain:example.com");
        assert!(!a.allowed);
        assert_eq!(a.policies, ["deny-net-open"]);
        let a = eval(&set, "agent:a", "brain.step", "kernel:main");
        assert!(a.allowed);
        assert_eq!(a.policies, ["allow-core"]);
        let a = eval(&set, "agent:a", "bus.publish", "topic:x");
        assert!(!a.allowed && a.policies.is_empty(), "default deny");
    }

    #[test]
    fn a_request_that_breaks_the_schema_is_refused() {
        let set = RuleSet::defaults();
        let err = set
            .evaluate(
                &Name::principal("agent:a").unwrap(),
                "fs.write",
                &Name::resource("kernel:k").unwrap(),
                Lane::Prod,
            )
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("request: fs.write by agent:a on kernel:k"),
            "{err}"
        );
        assert!(err.to_string().contains("does not allow"), "{err}");
        let err = set
            .evaluate(
                &Name::principal("agent:a").unwrap(),
                "fs.delete",
                &Name::resource("path:/x").unwrap(),
                Lane::Prod,
            )
            .unwrap_err();
        assert!(err.to_string().contains("unknown action"), "{err}");
    }

    #[test]
    fn malformed_and_schema_violating_files_name_their_line() {
        let bad_syntax =
            "permit(principal, action, resource);\n\npermit(principal action, resource);\n";
        match RuleSet::from_sources(&[("x.cedar".into(), bad_syntax.into())]) {
            Err(PolicyError::PolicyFile { file, line, .. }) => {
                assert_eq!((file.as_str(), line), ("x.cedar", 3))
            }
            other => panic!("{other:?}"),
        }
        let bad_schema = "// ok\npermit(principal, action == Capsule::Action::\"brain.step\", resource)\nwhen { resource.nope == 1 };\n";
        match RuleSet::from_sources(&[("y.cedar".into(), bad_schema.into())]) {
            Err(PolicyError::PolicyFile { file, line, reason }) => {
                assert_eq!(file, "y.cedar");
                assert!(line == 2 || line == 3, "line {line}");
                assert!(
                    reason.contains("nope") || reason.contains("attribute"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        let dup = "@id(\"a\") permit(principal, action, resource);\n@id(\"a\") forbid(principal, action, resource);\n";
        let err = RuleSet::from_sources(&[("z.cedar".into(), dup.into())])
            .unwrap_err()
            .to_string();
        assert_eq!(err, "z.cedar line 2: policy id \"a\" is already used");
    }
}
