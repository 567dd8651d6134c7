// react-dom/client for the preview: the vendored module, except that createRoot returns the root
// it already made for a container. Every re-render imports the entry module anew and calls
// createRoot(container).render(<App />) again; reusing the root lets React reconcile into the same
// DOM (no blank frame) and unmount the old tree's effects properly.
import * as client from "/vendor/react-dom-client.js";

const roots = new Map();

export function createRoot(container, options) {
  let root = roots.get(container);
  if (!root) {
    root = client.createRoot(container, options);
    const unmount = root.unmount.bind(root);
    root.unmount = () => {
      roots.delete(container);
      unmount();
    };
    roots.set(container, root);
  }
  return root;
}

export const hydrateRoot = client.hydrateRoot;
export const version = client.version;
export default { createRoot, hydrateRoot, version };
