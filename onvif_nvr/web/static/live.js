// Placeholder until the page lands.
import { el } from "./dom.js";

export async function render(root) {
  root.append(el("h1", {}, "live"), el("p", { class: "empty" }, "This page is being built."));
}
