//! Destructive commands (`[commands] hold`): the pattern language and the matcher.
//!
//! A pattern is a program followed by words, split like a shell splits (quotes group, `\`
//! escapes). The program is a name (`terraform`), an absolute path (`/usr/bin/terraform`), or
//! alternatives (`terraform|tofu`). The words:
//!
//! - a **positional word** (`destroy`, `*`, `delete-*`, `+*`): the arguments that are not options
//!   must contain a match for each, in this order, anywhere (`kubectl -n prod delete` matches
//!   `kubectl delete`). `*` matches any run of characters, `?` one; a word that is `*` alone
//!   matches any one argument. A word starting with `/` or `~` is a path: `~` is the invoking
//!   user's home, `*` stays within one path component, and the argument is compared after
//!   lexical clean-up (`//`, `/./`, a trailing `/`).
//! - an **option** (`--force`, `-f`, `-destroy`, `-rf`): present anywhere before a `--`, in any
//!   order. `--name` also matches an abbreviation (`--rec` for `--recursive`, as getopt_long
//!   accepts) and `--name=...`; `-x` matches any single-dash argument containing the letter
//!   (`-rfv`); a longer `-name` matches `-name`, `-name=...`, `--name` (Go's flag syntax) and, when
//!   it has at most four letters or digits, also those letters given apart (`-rf` matches `-fr`
//!   and `-r -f`).
//! - an **option with a value** (`-c=*drop *`, `--command=*drop *`): the value may follow as the
//!   next argument, after `=`, or attached to a short option (`-cVALUE`, `-qc VALUE`); it is
//!   compared without regard to case (SQL keywords).
//!
//! `|` separates alternatives in any word (`-f|--force`, `-c|--command=*drop *|*truncate *`).
//! Literal `*`, `?`, `|`, `=`, quotes and spaces are written with `\` before them.

pub mod guard;

use std::fmt;
use std::path::Path;

/// Why a pattern is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Nothing but spaces.
    #[error("empty command pattern")]
    Empty,
    /// An opening quote without its closing one.
    #[error("unclosed quote")]
    Unclosed,
    /// A `\` at the very end.
    #[error("a trailing backslash escapes nothing")]
    TrailingEscape,
    /// The program part is not usable.
    #[error("program {0:?}: {1}")]
    Program(String, &'static str),
    /// A word is not usable.
    #[error("word {0:?}: {1}")]
    Word(String, &'static str),
}

/// One character of a word: literal or special.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ch {
    Lit(char),
    /// `*`
    Star,
    /// `?`
    One,
    /// An unescaped `|`
    Bar,
    /// An unescaped `=`
    Eq,
}

/// Splits a pattern into words of [`Ch`] (shell-like quoting, `\` escapes).
fn tokenize(s: &str) -> Result<Vec<Vec<Ch>>, PatternError> {
    let mut words = Vec::new();
    let mut cur: Vec<Ch> = Vec::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut it = s.chars();
    while let Some(c) = it.next() {
        match c {
            '\\' => {
                let n = it.next().ok_or(PatternError::TrailingEscape)?;
                cur.push(Ch::Lit(n));
                in_word = true;
            }
            '\'' | '"' if quote.is_none() => {
                quote = Some(c);
                in_word = true;
            }
            c if quote == Some(c) => quote = None,
            c if c.is_whitespace() && quote.is_none() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '*' => {
                cur.push(Ch::Star);
                in_word = true;
            }
            '?' => {
                cur.push(Ch::One);
                in_word = true;
            }
            '|' => {
                cur.push(Ch::Bar);
                in_word = true;
            }
            '=' => {
                cur.push(Ch::Eq);
                in_word = true;
            }
            c => {
                cur.push(Ch::Lit(c));
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(PatternError::Unclosed);
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

fn split_at(w: &[Ch], sep: Ch) -> Vec<&[Ch]> {
    w.split(|c| *c == sep).collect()
}

fn literal(w: &[Ch]) -> Option<String> {
    w.iter()
        .map(|c| match c {
            Ch::Lit(c) => Some(*c),
            _ => None,
        })
        .collect()
}

/// A glob: literal characters, `*` and `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Glob {
    chars: Vec<Ch>,
    /// `*` and `?` do not match `/` (a path word).
    path: bool,
    /// Compared without regard to case (option values).
    fold: bool,
}

impl Glob {
    fn new(w: &[Ch], fold: bool) -> Result<Glob, &'static str> {
        if w.iter().any(|c| matches!(c, Ch::Bar | Ch::Eq)) {
            return Err("unexpected `|` or `=`");
        }
        Ok(Glob {
            path: matches!(w.first(), Some(Ch::Lit('/' | '~'))),
            chars: w.to_vec(),
            fold,
        })
    }

    fn matches(&self, s: &str) -> bool {
        let s: Vec<char> = if self.fold {
            s.chars().flat_map(char::to_lowercase).collect()
        } else {
            s.chars().collect()
        };
        let p: Vec<Ch> = if self.fold {
            self.chars
                .iter()
                .flat_map(|c| match c {
                    Ch::Lit(l) => l.to_lowercase().map(Ch::Lit).collect::<Vec<_>>(),
                    c => vec![*c],
                })
                .collect()
        } else {
            self.chars.clone()
        };
        glob_match(&p, &s, self.path)
    }

    /// `~` at the start of a path word becomes `home`.
    fn expand_home(&mut self, home: &Path) {
        if self.chars.first() == Some(&Ch::Lit('~'))
            && matches!(self.chars.get(1), None | Some(Ch::Lit('/')))
        {
            let h: Vec<Ch> = home.to_string_lossy().chars().map(Ch::Lit).collect();
            self.chars.splice(0..1, h);
            // `~/` and a home ending in `/`: one slash.
            clean_glob(&mut self.chars);
        }
    }
}

fn clean_glob(chars: &mut Vec<Ch>) {
    chars.dedup_by(|a, b| *a == Ch::Lit('/') && *b == Ch::Lit('/'));
    if chars.len() > 1 && chars.last() == Some(&Ch::Lit('/')) {
        chars.pop();
    }
}

/// Iterative glob matching with backtracking to the last `*` (linear in practice).
fn glob_match(p: &[Ch], s: &[char], path: bool) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(Ch::One) if !(path && s[si] == '/') => {
                pi += 1;
                si += 1;
                continue;
            }
            Some(Ch::Lit(c)) if *c == s[si] => {
                pi += 1;
                si += 1;
                continue;
            }
            Some(Ch::Star) => {
                star = Some((pi, si));
                pi += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, ss)) if !(path && s[ss] == '/') => {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            _ => return false,
        }
    }
    p[pi..].iter().all(|c| *c == Ch::Star)
}

/// How an option pattern is spelled.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OptName {
    /// `--name`
    Long(String),
    /// `-x`
    Short(char),
    /// `-name` (several characters after one dash)
    Single(String),
}

/// One alternative of an option word.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OptAlt {
    name: OptName,
}

/// A word of a pattern after the program.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Word {
    /// Alternatives, each matching one non-option argument.
    Positional(Vec<Glob>),
    /// Alternatives of an option, with the value's alternatives (empty: a flag).
    Option(Vec<OptAlt>, Vec<Glob>),
}

/// The program part.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Prog {
    /// Matches the name of the file run (before and after symbolic links).
    Name(String),
    /// Matches the canonical path of the file run.
    Path(String),
}

/// A compiled command pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    progs: Vec<Prog>,
    words: Vec<Word>,
    /// The canonical text.
    text: String,
}

fn is_option(w: &[Ch]) -> bool {
    matches!(w, [Ch::Lit('-'), c, ..] if *c != Ch::Eq)
}

fn parse_opt_name(w: &[Ch], whole: &str) -> Result<OptName, PatternError> {
    let bad = |m| PatternError::Word(whole.to_string(), m);
    let s = literal(w).ok_or_else(|| bad("an option name cannot have wildcards"))?;
    if let Some(n) = s.strip_prefix("--") {
        if n.is_empty() {
            return Err(bad("`--` alone is not an option"));
        }
        return Ok(OptName::Long(n.to_string()));
    }
    let Some(n) = s.strip_prefix('-') else {
        return Err(bad("mixes options and other words in alternatives"));
    };
    let mut cs = n.chars();
    match (cs.next(), cs.next()) {
        (Some(c), None) => Ok(OptName::Short(c)),
        (Some(_), Some(_)) => Ok(OptName::Single(n.to_string())),
        (None, _) => Err(bad("`-` alone is not an option")),
    }
}

impl Pattern {
    /// Parses a pattern; `home` replaces a leading `~` in path words.
    pub fn parse(text: &str, home: &Path) -> Result<Pattern, PatternError> {
        let words = tokenize(text)?;
        let Some((first, rest)) = words.split_first() else {
            return Err(PatternError::Empty);
        };
        let mut progs = Vec::new();
        for alt in split_at(first, Ch::Bar) {
            let shown = render_word(first);
            let s = literal(alt).ok_or(PatternError::Program(
                shown.clone(),
                "wildcards and `=` are not allowed in the program (only exact names or paths)",
            ))?;
            if s.is_empty() {
                return Err(PatternError::Program(shown, "an empty alternative"));
            }
            if s.contains('/') {
                if !s.starts_with('/') {
                    return Err(PatternError::Program(
                        shown,
                        "a path must be absolute (or give the program's name alone)",
                    ));
                }
                progs.push(Prog::Path(clean_path(&s)));
            } else {
                progs.push(Prog::Name(s));
            }
        }
        let mut out = Vec::new();
        for w in rest {
            let shown = render_word(w);
            let bad = |m| PatternError::Word(shown.clone(), m);
            if is_option(w) {
                // NAMES[=VALUES]: the first unescaped `=` separates them.
                let (names, values) = match w.iter().position(|c| *c == Ch::Eq) {
                    Some(i) => (&w[..i], Some(&w[i + 1..])),
                    None => (&w[..], None),
                };
                let mut alts = Vec::new();
                for n in split_at(names, Ch::Bar) {
                    alts.push(OptAlt {
                        name: parse_opt_name(n, &shown)?,
                    });
                }
                let mut vals = Vec::new();
                if let Some(v) = values {
                    for a in split_at(v, Ch::Bar) {
                        if a.is_empty() {
                            return Err(bad("an empty value (write `*` for any value)"));
                        }
                        vals.push(Glob::new(a, true).map_err(bad)?);
                    }
                }
                out.push(Word::Option(alts, vals));
            } else {
                let mut alts = Vec::new();
                for a in split_at(w, Ch::Bar) {
                    if a.is_empty() {
                        return Err(bad("an empty alternative"));
                    }
                    if is_option(a) {
                        return Err(bad("mixes options and other words in alternatives"));
                    }
                    let mut g = Glob::new(a, false).map_err(bad)?;
                    if g.path {
                        g.expand_home(home);
                        clean_glob(&mut g.chars);
                    }
                    alts.push(g);
                }
                out.push(Word::Positional(alts));
            }
        }
        Ok(Pattern {
            progs,
            words: out,
            text: words
                .iter()
                .map(|w| render_word(w))
                .collect::<Vec<_>>()
                .join(" "),
        })
    }

    /// The pattern in canonical form (re-parses to the same pattern).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The program names this pattern can match (a path's last component for a path).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.progs.iter().map(|p| match p {
            Prog::Name(n) => n.as_str(),
            Prog::Path(p) => p.rsplit('/').next().unwrap_or(p),
        })
    }

    /// True when `cmd` matches.
    pub fn matches(&self, cmd: &Exec<'_>) -> bool {
        let prog = self.progs.iter().any(|p| match p {
            Prog::Name(n) => cmd.names.iter().any(|c| c == n),
            Prog::Path(p) => cmd.paths.iter().any(|c| clean_path(c) == *p),
        });
        prog && self.args_match(cmd.args)
    }

    fn args_match(&self, args: &[String]) -> bool {
        let parsed = Args::parse(args);
        let mut next = 0usize;
        for w in &self.words {
            match w {
                Word::Positional(alts) => {
                    let found = parsed.positional[next..].iter().position(|a| {
                        alts.iter().any(|g| {
                            if g.path {
                                g.matches(&clean_path(a))
                            } else {
                                g.matches(a)
                            }
                        })
                    });
                    match found {
                        Some(i) => next += i + 1,
                        None => return false,
                    }
                }
                Word::Option(alts, vals) => {
                    if !alts.iter().any(|o| parsed.has_option(o, vals)) {
                        return false;
                    }
                }
            }
        }
        true
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Renders a word so that it tokenizes back to the same characters.
fn render_word(w: &[Ch]) -> String {
    let mut s = String::new();
    let spaced = w
        .iter()
        .any(|c| matches!(c, Ch::Lit(l) if l.is_whitespace()));
    for c in w {
        match c {
            Ch::Star => s.push('*'),
            Ch::One => s.push('?'),
            Ch::Bar => s.push('|'),
            Ch::Eq => s.push('='),
            Ch::Lit(l) if l.is_whitespace() => s.push(*l),
            Ch::Lit(l @ ('*' | '?' | '|' | '=' | '\\' | '\'' | '"')) => {
                s.push('\\');
                s.push(*l);
            }
            Ch::Lit(l) => s.push(*l),
        }
    }
    if spaced {
        format!("'{s}'")
    } else {
        s
    }
}

/// Lexical clean-up of a path: repeated `/` and `.` components go, and a trailing `/`.
fn clean_path(p: &str) -> String {
    if !p.starts_with('/') {
        return p.to_string();
    }
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// The arguments of one exec, seen as options and positional words.
struct Args<'a> {
    /// Options before `--` (without their dashes): (double dash, name, value after `=`, the
    /// argument that follows).
    opts: Vec<(bool, &'a str, Option<&'a str>, Option<&'a str>)>,
    positional: Vec<&'a str>,
}

impl<'a> Args<'a> {
    fn parse(args: &'a [String]) -> Args<'a> {
        let mut opts = Vec::new();
        let mut positional = Vec::new();
        let mut ended = false;
        for (i, a) in args.iter().enumerate() {
            let a = a.as_str();
            if ended || a == "-" || !a.starts_with('-') {
                positional.push(a);
                continue;
            }
            if a == "--" {
                ended = true;
                continue;
            }
            let (double, body) = match a.strip_prefix("--") {
                Some(b) => (true, b),
                None => (false, &a[1..]),
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            opts.push((double, name, value, args.get(i + 1).map(String::as_str)));
        }
        Args { opts, positional }
    }

    fn has_option(&self, o: &OptAlt, vals: &[Glob]) -> bool {
        let val_ok = |v: Option<&str>| match v {
            _ if vals.is_empty() => true,
            Some(v) => vals.iter().any(|g| g.matches(v)),
            None => false,
        };
        match &o.name {
            OptName::Long(want) => self.opts.iter().any(|(double, name, value, next)| {
                let named = if *double {
                    !name.is_empty() && want.starts_with(name)
                } else {
                    // Go's flag package takes `-name` for `--name`.
                    want.len() > 1 && name == want
                };
                named && (val_ok(*value) || (value.is_none() && val_ok(*next)))
            }),
            OptName::Short(c) => self.opts.iter().any(|(double, name, value, next)| {
                if *double {
                    return false;
                }
                if vals.is_empty() {
                    return name.contains(*c);
                }
                // `-c V`, `-cV`, `-c=V`, `-qc V`: the value is the rest of the cluster after the
                // letter, or the next argument when the letter ends it.
                let full: String = match value {
                    Some(v) => format!("{name}={v}"),
                    None => name.to_string(),
                };
                full.char_indices().filter(|(_, x)| x == c).any(|(i, _)| {
                    let rest = &full[i + c.len_utf8()..];
                    if rest.is_empty() {
                        val_ok(*next)
                    } else {
                        val_ok(Some(rest)) || val_ok(rest.strip_prefix('='))
                    }
                })
            }),
            OptName::Single(want) => {
                let whole = self.opts.iter().any(|(_, name, value, next)| {
                    name == want && (val_ok(*value) || (value.is_none() && val_ok(*next)))
                });
                // `-rf`: also the letters apart or in another order (short options).
                let letters = vals.is_empty()
                    && want.chars().count() <= 4
                    && want.chars().all(|c| c.is_ascii_alphanumeric())
                    && want.chars().all(|c| {
                        self.opts
                            .iter()
                            .any(|(double, name, _, _)| !double && name.contains(c))
                    });
                whole || letters
            }
        }
    }
}

/// One exec as the matcher sees it.
#[derive(Debug, Clone)]
pub struct Exec<'a> {
    /// Names of the program: the last component of the path given to exec and of the file it
    /// resolves to.
    pub names: Vec<String>,
    /// Paths of the program: as given (absolute only) and canonical.
    pub paths: Vec<String>,
    /// The arguments after `argv[0]`.
    pub args: &'a [String],
}

/// The compiled `[commands] hold` list of a session.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    patterns: Vec<Pattern>,
    names: std::collections::HashSet<String>,
}

impl Rules {
    /// Compiles the patterns (as validated by the profile); `home` is the invoking user's home.
    pub fn new(texts: &[String], home: &Path) -> Result<Rules, (String, PatternError)> {
        let mut r = Rules::default();
        for t in texts {
            let p = Pattern::parse(t, home).map_err(|e| (t.clone(), e))?;
            r.names.extend(p.names().map(str::to_string));
            r.patterns.push(p);
        }
        Ok(r)
    }

    /// True when there is nothing to hold.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The program names the rules name (a path's last component for a path).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// True when a program of this name can match a rule (only those are looked at closely).
    #[cfg(test)]
    pub fn has_name(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// The first rule `cmd` matches: its index and pattern.
    pub fn find(&self, cmd: &Exec<'_>) -> Option<(usize, &Pattern)> {
        self.patterns
            .iter()
            .enumerate()
            .find(|(_, p)| p.matches(cmd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: &str = "/home/u";

    fn pat(s: &str) -> Pattern {
        Pattern::parse(s, Path::new(HOME)).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// Splits a command line (whitespace only; `'...'` groups) into argv.
    fn argv(cmd: &str) -> Vec<String> {
        tokenize(cmd)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|w| {
                w.into_iter()
                    .map(|c| match c {
                        Ch::Lit(c) => c,
                        Ch::Star => '*',
                        Ch::One => '?',
                        Ch::Bar => '|',
                        Ch::Eq => '=',
                    })
                    .collect()
            })
            .collect()
    }

    fn hit(p: &str, cmd: &str) -> bool {
        let a = argv(cmd);
        let name = a[0].rsplit('/').next().unwrap_or_default().to_string();
        let paths = if a[0].starts_with('/') {
            vec![a[0].clone()]
        } else {
            vec![format!("/usr/bin/{}", a[0])]
        };
        pat(p).matches(&Exec {
            names: vec![name],
            paths,
            args: &a[1..],
        })
    }

    fn holds(p: &str, yes: &[&str], no: &[&str]) {
        for c in yes {
            assert!(hit(p, c), "{p:?} should hold {c:?}");
        }
        for c in no {
            assert!(!hit(p, c), "{p:?} should not hold {c:?}");
        }
    }

    #[test]
    fn terraform_destroy_and_its_near_misses() {
        holds(
            "terraform destroy",
            &[
                "terraform destroy",
                "terraform destroy -auto-approve",
                "terraform -chdir=infra destroy",
                "/usr/local/bin/terraform destroy -target=aws_instance.a",
                "terraform -chdir infra destroy",
            ],
            &[
                "terraform plan",
                "terraform plan -destroy",
                "terraform apply",
                "terraform",
                "tofu destroy",
                "terraform-docs destroy",
                "terraform -destroy",
                "terraform destroyer",
            ],
        );
        holds(
            "terraform apply -destroy",
            &[
                "terraform apply -destroy",
                "terraform apply -auto-approve -destroy",
                "terraform -chdir=x apply -destroy",
                "terraform apply --destroy",
                "terraform apply -destroy=true",
            ],
            &[
                "terraform apply",
                "terraform plan -destroy",
                "terraform apply -auto-approve",
                "terraform apply -- -destroy",
            ],
        );
        holds(
            "terraform|tofu destroy",
            &["terraform destroy", "tofu destroy"],
            &["tofu plan", "terragrunt destroy"],
        );
    }

    #[test]
    fn kubectl_with_options_before_the_verb() {
        holds(
            "kubectl delete",
            &[
                "kubectl delete pod x",
                "kubectl -n prod delete deployment web",
                "kubectl --context=prod delete ns x",
                "kubectl --namespace prod delete -f x.yaml",
            ],
            &[
                "kubectl get pods",
                "kubectl apply -f delete.yaml",
                "kubectl describe pod --delete",
            ],
        );
    }

    #[test]
    fn cloud_clis() {
        holds(
            "aws ec2 terminate-instances",
            &[
                "aws ec2 terminate-instances --instance-ids i-1",
                "aws --region eu-west-1 ec2 terminate-instances",
            ],
            &[
                "aws ec2 describe-instances",
                "aws ec2 stop-instances",
                "aws terminate-instances ec2",
            ],
        );
        holds(
            "aws s3 rb",
            &["aws s3 rb s3://bucket --force"],
            // Words are found anywhere in order, not only as the leading subcommands (option
            // values would shift those): `aws s3 cp rb s3://x/rb` is held too, by design.
            &["aws s3 ls", "aws s3 cp x s3://x/rb", "aws rb s3"],
        );
        holds(
            "aws s3 rm --recursive",
            &[
                "aws s3 rm s3://b/ --recursive",
                "aws s3 rm --recursive s3://b",
                "aws s3 rm s3://b --rec",
            ],
            &["aws s3 rm s3://b/key", "aws s3 cp --recursive a s3://b"],
        );
        holds(
            "aws * delete-*",
            &[
                "aws dynamodb delete-table --table-name t",
                "aws rds delete-db-instance",
            ],
            &["aws dynamodb describe-table", "aws delete-x"],
        );
        holds(
            "gcloud * delete",
            &[
                "gcloud compute instances delete vm1",
                "gcloud sql instances delete db --quiet",
                "gcloud --project p projects delete p",
            ],
            &["gcloud compute instances list", "gcloud delete"],
        );
        holds(
            "az * delete",
            &["az group delete -n rg --yes", "az vm delete -g rg -n vm"],
            &["az group list", "az vm deallocate -n x"],
        );
    }

    #[test]
    fn databases() {
        holds(
            "dropdb",
            &[
                "dropdb prod",
                "/usr/lib/postgresql/15/bin/dropdb -h db prod",
            ],
            &["createdb prod", "psql -c 'DROP TABLE x'"],
        );
        let p = "psql '-c|--command=*drop *|*truncate *'";
        holds(
            p,
            &[
                "psql -c 'DROP TABLE users'",
                "psql -h db -U admin -c 'drop database prod'",
                "psql -qc 'DROP TABLE x'",
                "psql '-cDROP TABLE x'",
                "psql --command='select 1; DROP SCHEMA s cascade'",
                "psql --command 'TRUNCATE accounts'",
                "psql -c 'truncate accounts'",
            ],
            &[
                "psql -c 'SELECT 1'",
                "psql -c 'select * from dropped_items'",
                "psql -f drop.sql",
                "psql 'DROP TABLE'",
                "psql -d drop",
            ],
        );
    }

    #[test]
    fn git_force_pushes() {
        let p = "git push --force|-f";
        holds(
            p,
            &[
                "git push --force",
                "git push -f origin main",
                "git push origin main --force",
                "git -C repo push -uf origin main",
                "git push --forc",
            ],
            &[
                "git push origin main",
                "git push --force-with-lease",
                "git fetch --force",
                "git commit -m 'push --force'",
                "git push --follow-tags",
            ],
        );
        holds(
            "git push +*",
            &[
                "git push origin +main",
                "git push origin +refs/heads/a:refs/heads/b",
            ],
            &["git push origin main", "git push origin -- -x"],
        );
    }

    #[test]
    fn rm_of_the_root_or_home() {
        let p = "rm -r|-R|--recursive /|/*|~";
        holds(
            p,
            &[
                "rm -rf /",
                "rm -fr /",
                "rm -r -f /",
                "rm -R //",
                "rm --recursive --force /",
                "rm -rf /home/u",
                "rm -rf /home/u/",
                "rm -rf /usr",
                "rm -rf --no-preserve-root /",
                "rm -rf /./",
            ],
            &[
                "rm -rf /tmp/build",
                "rm -rf build",
                "rm / ",
                "rm -f /etc/x",
                "rm -rf /home/u/project",
            ],
        );
        holds(
            "rm -rf /",
            &["rm -rf /", "rm -fr /", "rm -r -f /", "rm -rfv /"],
            &["rm -r /", "rm -f /", "rm -rf /tmp"],
        );
    }

    #[test]
    fn star_alone_is_one_argument_and_paths_match_the_file() {
        holds("x * y", &["x a y", "x a b y"], &["x y", "x y a"]);
        let p = pat("/opt/tf/terraform destroy");
        let args = vec!["destroy".to_string()];
        let e = |paths: Vec<&str>| Exec {
            names: vec!["terraform".into()],
            paths: paths.into_iter().map(String::from).collect(),
            args: &args,
        };
        assert!(p.matches(&e(vec!["/opt/tf//terraform"])));
        assert!(!p.matches(&e(vec!["/usr/bin/terraform"])));
        // Any of the names: a symbolic link named otherwise, resolved to terraform.
        let q = pat("terraform destroy");
        let ex = Exec {
            names: vec!["tf".into(), "terraform".into()],
            paths: vec![],
            args: &args,
        };
        assert!(q.matches(&ex));
    }

    #[test]
    fn quoting_escapes_and_canonical_text() {
        let p = pat("  psql   -c=\"*drop table*\"  ");
        assert_eq!(p.text(), "psql '-c=*drop table*'");
        assert_eq!(pat(p.text()), p);
        let q = pat(r"prog a\*b x\|y");
        assert_eq!(q.text(), r"prog a\*b x\|y");
        assert!(hit(r"prog a\*b", "prog a*b"));
        assert!(!hit(r"prog a\*b", "prog aXb"));
        assert!(hit(r"prog x\|y", "prog x|y"));
        for s in [
            "terraform destroy",
            "git push --force|-f",
            "rm -r|-R /|/*|~",
        ] {
            let p = pat(s);
            assert_eq!(pat(p.text()), p, "{s}");
        }
    }

    #[test]
    fn bad_patterns_say_why() {
        let err = |s: &str| Pattern::parse(s, Path::new(HOME)).err();
        assert_eq!(err("   "), Some(PatternError::Empty));
        assert_eq!(err("a 'b"), Some(PatternError::Unclosed));
        assert_eq!(err("a b\\"), Some(PatternError::TrailingEscape));
        assert!(matches!(
            err("terra* destroy"),
            Some(PatternError::Program(..))
        ));
        assert!(matches!(
            err("bin/terraform"),
            Some(PatternError::Program(..))
        ));
        assert!(matches!(err("a|"), Some(PatternError::Program(..))));
        assert!(matches!(err("git push -f|x"), Some(PatternError::Word(..))));
        assert!(matches!(err("git push --f*"), Some(PatternError::Word(..))));
        assert!(matches!(err("psql -c="), Some(PatternError::Word(..))));
        assert!(matches!(err("x a=b"), Some(PatternError::Word(..))));
        assert!(matches!(err("x --"), Some(PatternError::Word(..))));
    }

    #[test]
    fn rules_know_their_names() {
        let r = Rules::new(
            &["terraform|tofu destroy".into(), "/usr/bin/dropdb".into()],
            Path::new(HOME),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(r.has_name("terraform") && r.has_name("tofu") && r.has_name("dropdb"));
        assert!(!r.has_name("ls"));
        let args = vec!["destroy".to_string()];
        let e = Exec {
            names: vec!["tofu".into()],
            paths: vec![],
            args: &args,
        };
        assert_eq!(r.find(&e).map(|(i, _)| i), Some(0));
    }
}
