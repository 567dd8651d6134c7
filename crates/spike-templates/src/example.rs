//! The example project: a small React app in TSX, written by this repository. The CLI writes it
//! out (`spike example`) and the room server seeds new rooms from it (`?template=example`).

/// `(path, text)` of every file, paths relative to the project's `src/`.
pub const FILES: &[(&str, &str)] = &[
    ("App.tsx", include_str!("../example/App.tsx")),
    ("main.tsx", include_str!("../example/main.tsx")),
    (
        "components/Counter.tsx",
        include_str!("../example/components/Counter.tsx"),
    ),
    (
        "components/TodoList.tsx",
        include_str!("../example/components/TodoList.tsx"),
    ),
    (
        "hooks/useLocalStorage.ts",
        include_str!("../example/hooks/useLocalStorage.ts"),
    ),
    ("lib/format.ts", include_str!("../example/lib/format.ts")),
];

/// The example's `meta` entries: the entry file and the title.
pub const META: &[(&str, &str)] = &[("entry", "main.tsx"), ("title", "Spike example")];
