// "Queue on GPU": sends the current graph (API format) to this package's server route,
// which checks it against the ComfyBurst API and queues it to run on a ComfyBurst GPU.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

async function queueOnGpu() {
  const { output } = await app.graphToPrompt();
  const response = await api.fetchApi("/comfyburst/queue", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ prompt: output, client_id: api.clientId }),
  });
  const body = await response.json();
  if (!response.ok) {
    // Same shape as ComfyUI's own /prompt rejection, so errors land on the right nodes.
    app.lastNodeErrors = body.node_errors || null;
    app.canvas?.draw(true, true);
    const error = body.error || {};
    const lines = [error.message || "ComfyBurst rejected the workflow"];
    for (const [id, node] of Object.entries(body.node_errors || {})) {
      for (const e of node.errors || []) lines.push(`#${id} ${node.class_type}: ${e.message} ${e.details || ""}`);
    }
    app.ui?.dialog?.show(lines.join("\n"));
    return;
  }
  app.lastNodeErrors = null;
}

app.registerExtension({
  name: "ComfyBurst.QueueOnGpu",
  async setup() {
    const button = document.createElement("button");
    button.id = "comfyburst-queue-on-gpu";
    button.textContent = "Queue on GPU";
    button.title = "Run this workflow on a ComfyBurst GPU";
    button.style.cssText =
      "position:fixed;right:12px;bottom:12px;z-index:1000;padding:6px 12px;border-radius:6px;" +
      "background:#2b6cb0;color:#fff;border:none;cursor:pointer;font:13px sans-serif";
    button.addEventListener("click", () => queueOnGpu().catch((e) => app.ui?.dialog?.show(String(e))));
    document.body.appendChild(button);
  },
});
