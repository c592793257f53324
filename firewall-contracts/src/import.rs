//! `smf-firewall contracts import FILE`: managements, adapters and options from YAML, applied
//! in one transaction (all or nothing), every problem reported as `FILE:LINE:COL: error: ...`.
//!
//! ```yaml
//! managements:
//!   - id: M-1001
//!     start: 2025-04-01
//!     suspensions: [{from: 2025-06-01, to: 2025-06-03}]        # optional, Art. 21
//!     termination: {on: 2026-03-31, by: customer, notice: 2026-02-01}  # optional, Art. 23
//! adapters:
//!   - serial: FUJI-0001
//!     model: SEIL/x86 Fuji          # or x86-fuji
//!     management: M-1001
//!     role: entry
//!     since: 2025-04-01
//!     role_changes: [{role: standby, on: 2025-09-01}]        # optional, Art. 5-1
//! options:
//!   - id: UFO-1
//!     serial: FUJI-0001
//!     start: 2025-04-01             # suspensions and termination as for managements
//! ```
//!
//! Order of application: managements, adapters with their role changes, options, every
//! suspension, option terminations, then management terminations (which end the options that
//! would outlive them, Art. 23-3).

use std::{path::Path, str::FromStr};

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::{
    model::{Day, Model, Role, Suspension, TerminatedBy, Termination, parse_day},
    store::{NewAdapter, Store, StoreError},
};
use firewall_diagnostic::{Diagnostic, Diagnostics, parse_yaml};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Invalid(#[from] Diagnostics),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How much an import wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Imported {
    pub managements: usize,
    pub adapters: usize,
    pub options: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    managements: Vec<Spanned<RawContract>>,
    #[serde(default)]
    adapters: Vec<Spanned<RawAdapter>>,
    #[serde(default)]
    options: Vec<Spanned<RawOption>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContract {
    id: Spanned<String>,
    start: Spanned<String>,
    #[serde(default)]
    suspensions: Vec<Spanned<RawSuspension>>,
    termination: Option<Spanned<RawTermination>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOption {
    id: Spanned<String>,
    serial: Spanned<String>,
    start: Spanned<String>,
    #[serde(default)]
    suspensions: Vec<Spanned<RawSuspension>>,
    termination: Option<Spanned<RawTermination>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdapter {
    serial: Spanned<String>,
    model: Spanned<String>,
    management: Spanned<String>,
    role: Spanned<String>,
    since: Spanned<String>,
    #[serde(default)]
    role_changes: Vec<Spanned<RawRoleChange>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoleChange {
    role: Spanned<String>,
    on: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuspension {
    from: Spanned<String>,
    to: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTermination {
    on: Spanned<String>,
    by: Spanned<String>,
    notice: Option<Spanned<String>>,
}

/// One change to make, in application order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Management {
        id: String,
        start: Day,
    },
    Adapter(NewAdapter),
    Role {
        serial: String,
        role: Role,
        on: Day,
    },
    Option {
        id: String,
        serial: String,
        start: Day,
    },
    Suspend {
        id: String,
        suspension: Suspension,
    },
    Terminate {
        id: String,
        termination: Termination,
    },
}

/// Reads and checks the whole file, then applies it in one transaction. Nothing is written
/// unless every entry is valid and every change is allowed.
pub async fn import(store: &Store, path: &Path, text: &str) -> Result<Imported, ImportError> {
    let (steps, imported) = plan(path, text)?;
    let mut changes = store.begin().await?;
    for (location, step) in steps {
        let applied = match step {
            Step::Management { id, start } => changes.add_management(&id, start).await,
            Step::Adapter(new) => changes.add_adapter(&new).await,
            Step::Role { serial, role, on } => changes.set_role(&serial, role, on).await,
            Step::Option { id, serial, start } => changes.add_option(&id, &serial, start).await,
            Step::Suspend { id, suspension } => changes.suspend(&id, suspension).await,
            Step::Terminate { id, termination } => {
                changes.terminate(&id, termination).await.map(drop)
            }
        };
        match applied {
            Ok(()) => {}
            Err(StoreError::Refused(refusal)) => {
                return Err(at(path, location, refusal.to_string()).into());
            }
            Err(other) => return Err(other.into()),
        }
    }
    changes.commit().await?;
    Ok(imported)
}

/// Checks the whole file as `import` does before it writes anything, without a store: what a
/// file can be refused for by itself.
pub fn check(path: &Path, text: &str) -> Result<Imported, Diagnostics> {
    plan(path, text).map(|(_, imported)| imported)
}

fn at(path: &Path, location: Location, message: String) -> Diagnostics {
    Diagnostics {
        file: path.display().to_string(),
        items: vec![Diagnostic::at(&location, message)],
    }
}

/// The file as steps in application order, or every problem found in it.
fn plan(path: &Path, text: &str) -> Result<(Vec<(Location, Step)>, Imported), Diagnostics> {
    let raw: RawFile = parse_yaml(path, text)?;
    let mut fields = Fields::default();
    let imported = Imported {
        managements: raw.managements.len(),
        adapters: raw.adapters.len(),
        options: raw.options.len(),
    };
    let mut adds = Vec::new();
    let mut options = Vec::new();
    let mut later = Vec::new();
    let mut option_ends = Vec::new();
    let mut management_ends = Vec::new();
    for entry in raw.managements {
        let m = entry.value;
        if let Some(start) = fields.day(&m.start) {
            adds.push((
                entry.referenced,
                Step::Management {
                    id: m.id.value.clone(),
                    start,
                },
            ));
        }
        fields.life(
            &m.id.value,
            m.suspensions,
            m.termination,
            &mut later,
            &mut management_ends,
        );
    }
    for entry in raw.adapters {
        let a = entry.value;
        let (model, role, since) = (
            fields.model(&a.model),
            fields.role(&a.role),
            fields.day(&a.since),
        );
        if let (Some(model), Some(role), Some(since)) = (model, role, since) {
            adds.push((
                entry.referenced,
                Step::Adapter(NewAdapter {
                    serial: a.serial.value.clone(),
                    model,
                    management: a.management.value,
                    role,
                    since,
                }),
            ));
        }
        for change in a.role_changes {
            if let (Some(role), Some(on)) = (
                fields.role(&change.value.role),
                fields.day(&change.value.on),
            ) {
                adds.push((
                    change.referenced,
                    Step::Role {
                        serial: a.serial.value.clone(),
                        role,
                        on,
                    },
                ));
            }
        }
    }
    for entry in raw.options {
        let o = entry.value;
        if let Some(start) = fields.day(&o.start) {
            options.push((
                entry.referenced,
                Step::Option {
                    id: o.id.value.clone(),
                    serial: o.serial.value,
                    start,
                },
            ));
        }
        fields.life(
            &o.id.value,
            o.suspensions,
            o.termination,
            &mut later,
            &mut option_ends,
        );
    }
    if !fields.problems.is_empty() {
        return Err(Diagnostics {
            file: path.display().to_string(),
            items: fields.problems,
        });
    }
    adds.extend(options);
    adds.extend(later);
    adds.extend(option_ends);
    adds.extend(management_ends);
    Ok((adds, imported))
}

/// Field conversions that record a positioned problem instead of stopping at the first.
#[derive(Default)]
struct Fields {
    problems: Vec<Diagnostic>,
}

impl Fields {
    fn day(&mut self, text: &Spanned<String>) -> Option<Day> {
        self.parsed(text, parse_day)
    }

    /// `Some(None)` for an absent day, `Some(Some(day))` for a valid one, None for a bad one.
    fn optional_day(&mut self, text: Option<&Spanned<String>>) -> Option<Option<Day>> {
        match text {
            None => Some(None),
            Some(text) => self.day(text).map(Some),
        }
    }

    fn model(&mut self, text: &Spanned<String>) -> Option<Model> {
        self.parsed(text, Model::from_str)
    }

    fn role(&mut self, text: &Spanned<String>) -> Option<Role> {
        self.parsed(text, Role::from_str)
    }

    fn parsed<T, E: ToString>(
        &mut self,
        text: &Spanned<String>,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        parse(&text.value)
            .map_err(|error| {
                self.problems
                    .push(Diagnostic::at(&text.referenced, error.to_string()))
            })
            .ok()
    }

    /// A contract's suspensions and termination as steps.
    fn life(
        &mut self,
        id: &str,
        suspensions: Vec<Spanned<RawSuspension>>,
        termination: Option<Spanned<RawTermination>>,
        later: &mut Vec<(Location, Step)>,
        ends: &mut Vec<(Location, Step)>,
    ) {
        for entry in suspensions {
            let from = self.day(&entry.value.from);
            let to = self.optional_day(entry.value.to.as_ref());
            if let (Some(from), Some(to)) = (from, to) {
                later.push((
                    entry.referenced,
                    Step::Suspend {
                        id: id.to_string(),
                        suspension: Suspension { from, to },
                    },
                ));
            }
        }
        let Some(entry) = termination else {
            return;
        };
        let t = entry.value;
        let on = self.day(&t.on);
        let by = match t.by.value.as_str() {
            "customer" => Some(TerminatedBy::Customer),
            "provider" => Some(TerminatedBy::Provider),
            other => {
                self.problems.push(Diagnostic::at(
                    &t.by.referenced,
                    format!("`by: {other}`: a termination is by `customer` or `provider`"),
                ));
                None
            }
        };
        let notice = self.optional_day(t.notice.as_ref());
        if let (Some(on), Some(by), Some(notice)) = (on, by, notice) {
            ends.push((
                entry.referenced,
                Step::Terminate {
                    id: id.to_string(),
                    termination: Termination { on, by, notice },
                },
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<(u32, String)> {
        match plan(Path::new("c.yaml"), text) {
            Ok(_) => Vec::new(),
            Err(diagnostics) => diagnostics
                .items
                .into_iter()
                .map(|d| (d.line, d.message))
                .collect(),
        }
    }

    #[test]
    fn steps_come_in_application_order() {
        let text = "managements:\n  - {id: M-1, start: 2025-04-01, termination: {on: 2025-12-31, by: provider}}\n\
                    adapters:\n  - {serial: S-1, model: SEIL/X1, management: M-1, role: standby, since: 2025-04-01, role_changes: [{role: entry, on: 2025-05-01}]}\n\
                    options:\n  - {id: O-1, serial: S-1, start: 2025-05-01, suspensions: [{from: 2025-06-01}], termination: {on: 2025-11-30, by: customer, notice: 2025-10-01}}\n";
        let (steps, imported) = plan(Path::new("c.yaml"), text).unwrap();
        let kinds: Vec<&str> = steps
            .iter()
            .map(|(_, step)| match step {
                Step::Management { .. } => "management",
                Step::Adapter(_) => "adapter",
                Step::Role { .. } => "role",
                Step::Option { .. } => "option",
                Step::Suspend { .. } => "suspend",
                Step::Terminate { id, .. } if id == "O-1" => "end option",
                Step::Terminate { .. } => "end management",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "management",
                "adapter",
                "role",
                "option",
                "suspend",
                "end option",
                "end management"
            ]
        );
        assert_eq!(
            imported,
            Imported {
                managements: 1,
                adapters: 1,
                options: 1
            }
        );
    }

    #[test]
    fn every_bad_field_is_reported_with_its_line() {
        let text = "managements:\n  - {id: M-1, start: 2025-13-01}\n\
                    adapters:\n  - {serial: S-1, model: SEIL/X9, management: M-1, role: boss, since: 2025-04-01}\n\
                    options:\n  - {id: O-1, serial: S-1, start: 2025-05-01, termination: {on: 2025-11-30, by: nobody}}\n";
        let found = problems(text);
        assert_eq!(found.len(), 4, "{found:?}");
        assert_eq!(found[0].0, 2);
        assert!(
            found[0].1.contains("`2025-13-01` is not a date"),
            "{found:?}"
        );
        assert_eq!(found[1].0, 4);
        assert!(found[1].1.contains("unknown model `SEIL/X9`"), "{found:?}");
        assert_eq!(found[2].0, 4);
        assert!(found[2].1.contains("unknown role `boss`"), "{found:?}");
        assert_eq!(found[3].0, 6);
        assert!(found[3].1.contains("`by: nobody`"), "{found:?}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let found = problems("managements:\n  - {id: M-1, start: 2025-04-01, colour: red}\n");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, 2);
        assert!(found[0].1.contains("colour"), "{found:?}");
    }
}
