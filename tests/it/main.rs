//! Integration tests of vidpress, one binary with a module per area.

mod api;
mod bad_input;
mod cli;
mod cluster;
mod corpus;
mod events;
mod jobs;
mod limits;
mod metrics;
mod openapi;
mod support;
mod tenants;
mod web;
