// Stand-in for ComfyUI frontend's `scripts/app.js` (not ComfyUI's code): extensions, a graph
// loaded from API format, and queuePrompt with ComfyUI's error handling (node errors kept in
// lastNodeErrors, the rejection shown in a dialog). Only what the browser tests touch.
import { api, PromptExecutionError } from "./api.js";

const extensions = [];

function showDialog(text) {
  const dialog = document.createElement("div");
  dialog.setAttribute("role", "dialog");
  dialog.style.cssText =
    "position:fixed;left:20%;top:25%;width:60%;padding:16px;background:#222;color:#eee;" +
    "white-space:pre-wrap;font:13px monospace;border:1px solid #888";
  dialog.textContent = text;
  document.body.appendChild(dialog);
}

export const app = {
  graph: { nodes: [] },
  lastNodeErrors: null,
  ui: { dialog: { show: showDialog } },

  registerExtension(extension) {
    extensions.push(extension);
  },

  async setupExtensions() {
    for (const extension of extensions) await extension.setup?.(this);
  },

  // Nodes with their literal inputs as widgets, as the editor shows an API-format graph.
  loadApiJson(apiGraph) {
    const nodes = Object.entries(apiGraph).map(([id, node]) => ({
      id,
      type: node.class_type,
      links: Object.entries(node.inputs).filter(([, value]) => Array.isArray(value)),
      widgets: Object.entries(node.inputs)
        .filter(([, value]) => !Array.isArray(value))
        .map(([name, value]) => ({ name, value })),
    }));
    this.graph = { nodes };
  },

  graphToPrompt() {
    const output = {};
    for (const node of this.graph.nodes) {
      const inputs = Object.fromEntries(node.links);
      for (const widget of node.widgets) inputs[widget.name] = widget.value;
      output[node.id] = { class_type: node.type, inputs };
    }
    const workflow = { nodes: this.graph.nodes.map((n) => ({ id: n.id, type: n.type })) };
    return { output, workflow };
  },

  async queuePrompt(number, batchCount = 1) {
    for (let i = 0; i < batchCount; i++) {
      const { output, workflow } = this.graphToPrompt();
      try {
        const answer = await api.queuePrompt(number, { output, workflow });
        this.lastNodeErrors = answer.node_errors ?? null;
      } catch (error) {
        if (!(error instanceof PromptExecutionError)) throw error;
        this.lastNodeErrors = error.response.node_errors ?? null;
        showDialog(error.toString());
        return false;
      }
    }
    return true;
  },
};
