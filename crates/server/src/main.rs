//! herald
fn main() {}
