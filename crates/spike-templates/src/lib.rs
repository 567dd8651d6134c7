//! The projects new rooms and folders start from, embedded in the binary: data, not code.
//!
//! - [`example`]: a small React app in TSX (a counter, a todo list with a local-storage hook),
//!   written by this repository. The CLI writes it out (`spike example`), the room server seeds
//!   new rooms from it (`?template=example`) and the desktop app opens it on first start.
//!
//! Each template is a list of `(path, text)` files, paths relative to the project's `src/`, and
//! the room `meta` entries that go with it (the entry file, the title).
//!
//! ```
//! let entry = spike_templates::example::META
//!     .iter()
//!     .find(|(k, _)| *k == "entry")
//!     .map(|(_, v)| *v);
//! assert_eq!(entry, Some("main.tsx"));
//! assert!(spike_templates::example::FILES.iter().any(|(p, _)| *p == "main.tsx"));
//! ```

pub mod example;
