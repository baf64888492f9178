//! Pictures that look inside a model: class-activation heatmaps over an
//! image ([`heatmap`]) and grids of them ([`camgrid`]).

pub mod camgrid;
pub mod heatmap;
