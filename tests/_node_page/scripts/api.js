// Stand-in for ComfyUI frontend's `scripts/api.js` (not ComfyUI's code): only what the
// ComfyBurst extension uses, for the browser test's stand-in page (tests/_node_page.py).
// The same browser tests drive the real frontend when COMFYUI_DIR is set.

// A /prompt rejection ({error, node_errors}), as ComfyUI's frontend names it.
export class PromptExecutionError extends Error {
  constructor(response) {
    super("Prompt execution failed");
    this.response = response;
  }

  // The frontend's wording: "message: details", then each node's errors.
  toString() {
    const { error, node_errors: nodeErrors } = this.response;
    let text = typeof error === "string" ? error : `${error?.message}: ${error?.details}`;
    for (const nodeError of Object.values(nodeErrors ?? {})) {
      text += `\n${nodeError.class_type}:`;
      for (const reason of nodeError.errors) text += `\n    - ${reason.message}: ${reason.details}`;
    }
    return text;
  }
}

export const api = {
  clientId: "standin-page",
  fetchApi(route, init) {
    return fetch(`/api${route}`, init);
  },
  // The frontend's own queue call; the extension swaps it for one click.
  async queuePrompt(number, { output, workflow }) {
    const response = await this.fetchApi("/prompt", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ prompt: output, extra_data: { extra_pnginfo: { workflow } } }),
    });
    const body = await response.json();
    if (response.status !== 200) throw new PromptExecutionError(body);
    return body;
  },
};
