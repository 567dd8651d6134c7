//! The tier latency bench (written later in this branch).

fn main() {}
