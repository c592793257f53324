//! Contracts: who may use the Ultra Firewall Option on which adapter, kept in a
//! store on SQLite or PostgreSQL. `model` is the terms' vocabulary and calendar, `store` the
//! database with the rules it enforces, `import` the YAML file format of `contracts import`,
//! `license` the licence decision the daemon and `smf-firewall license` make from it, `billing`
//! the provider's invoices (Art. 15, 16, 26), `fleet` the decisions for every adapter at once
//! and `tokens` the hashed credentials of the grant server (issue 15).

#![forbid(unsafe_code)]

pub mod billing;
pub mod fleet;
pub mod import;
pub mod license;
pub mod model;
pub mod store;
pub mod tokens;

pub use model::{
    Adapter, AdapterFacts, Contract, ContractKind, ContractState, Day, Model, Role, RoleChange,
    Suspension, TerminatedBy, Termination,
};
pub use store::{Changes, NewAdapter, Refusal, Store, StoreError};
