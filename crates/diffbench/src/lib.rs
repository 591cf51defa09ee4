//! The differential bench as a library: the run's environment, the rows, the table and
//! gates, the SVG chart. `main.rs` wires them to the command line.

pub mod env;
pub mod osstat;
pub mod result;
pub mod rows;
pub mod svg;
pub mod table;
