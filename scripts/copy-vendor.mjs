// Copy the browser builds of npm dependencies into the Python package's static folder.
// Runs after `npm ci` (yours, or the one setup.py runs when building a wheel without them); the
// copies are build output and are never committed.
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const target = join(root, "src", "userboard", "web", "static", "vendor");
const files = [
  ["socket.io-client/dist/socket.io.esm.min.js", "socket.io.esm.min.js"],
  ["socket.io-client/dist/socket.io.esm.min.js.map", "socket.io.esm.min.js.map"],
];

mkdirSync(target, { recursive: true });
for (const [source, name] of files) {
  copyFileSync(join(root, "node_modules", source), join(target, name));
}
console.log(`copied ${files.length} file(s) to ${target}`);
