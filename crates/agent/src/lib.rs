//! The node agent: watches the config directory, reconciles the datapath, serves
//! `/metrics`, `/healthz` and `/readyz`.
#![deny(missing_docs)]
