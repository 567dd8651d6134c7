//! Where the preview reads the project's files from.

/// The project the preview runs: its files and its entry module. The desktop shell implements it
/// for its room (a yrs document); tests and the CLI can use a map or a folder.
///
/// Paths are `/`-separated and relative to the project's root, with no leading `/`
/// (`components/Counter.tsx`), the same in every method.
pub trait ModuleSource {
    /// The text of the file at `path`, or `None` when there is no such file.
    fn read(&self, path: &str) -> Option<String>;

    /// Every file's path (for the project-wide error list).
    fn paths(&self) -> Vec<String>;

    /// The path of the module the page imports first (e.g. `main.tsx`).
    fn entry(&self) -> String;

    /// The page's title; `None` (the default) titles it "Preview".
    fn title(&self) -> Option<String> {
        None
    }

    /// The version `package` is pinned to (`1.9.3`, `^2`), or `None` (the default) to let the
    /// CDN choose. A room keeps its pins in `meta.packages`, a JSON object of package → version.
    fn package_version(&self, package: &str) -> Option<String> {
        let _ = package;
        None
    }
}
