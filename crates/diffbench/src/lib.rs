//! The differential bench as a library: the run's environment, the native server process
//! of the `*_ext` rows, the rows, the table and gates, the SVG chart. `main.rs` wires them
//! to the command line.

pub mod env;
pub mod ext_server;
pub mod fdlimit;
pub mod osstat;
pub mod ports;
pub mod result;
pub mod rows;
pub mod selfexec;
pub mod stages;
pub mod svg;
pub mod table;
