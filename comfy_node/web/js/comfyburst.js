// "Queue on GPU": queues the current graph as ComfyUI's own Queue button does, but through this
// package's server route, which checks it with the ComfyBurst API (pre-flight) and queues a local
// prompt that runs it on a ComfyBurst GPU and saves the images that come back.
import { app } from "../../scripts/app.js";
import * as comfyApi from "../../scripts/api.js";

const { api } = comfyApi;

async function postToGpu(_number, { output, workflow }) {
  const response = await api.fetchApi("/comfyburst/queue", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ prompt: output, workflow, client_id: api.clientId ?? "" }),
  });
  const body = await response.json();
  if (response.status !== 200) {
    // The route answers in the shape of ComfyUI's /prompt rejection: thrown as ComfyUI's own
    // error, the app shows it and marks the failing nodes.
    const PromptError = comfyApi.PromptExecutionError;
    const reason = [body.error?.message, body.error?.details].filter(Boolean).join(": ");
    const message = reason || "ComfyBurst rejected the workflow";
    throw PromptError ? new PromptError(body) : new Error(message);
  }
  return body;
}

async function queueOnGpu() {
  // The app queues as usual (widget callbacks, error display, queue tracking); only its next
  // api.queuePrompt call — the one for this click, even if the app is busy with another queue
  // request and gets to it later — goes to the GPU route instead of /prompt.
  const original = api.queuePrompt;
  const once = function (...args) {
    api.queuePrompt = original;
    return postToGpu(...args);
  };
  api.queuePrompt = once;
  try {
    await app.queuePrompt(0, 1);
  } catch (error) {
    if (api.queuePrompt === once) api.queuePrompt = original;
    throw error;
  }
}

app.registerExtension({
  name: "ComfyBurst.QueueOnGpu",
  async setup() {
    const button = document.createElement("button");
    button.id = "comfyburst-queue-on-gpu";
    button.textContent = "Queue on GPU";
    button.title = "Run this workflow on a ComfyBurst GPU";
    button.style.cssText =
      "position:fixed;right:12px;top:46px;z-index:1000;padding:6px 12px;border-radius:6px;" +
      "background:#2b6cb0;color:#fff;border:none;cursor:pointer;font:13px sans-serif";
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await queueOnGpu();
      } catch (error) {
        console.error(error);
        app.ui?.dialog?.show(`ComfyBurst: ${error}`);
      } finally {
        button.disabled = false;
      }
    });
    document.body.appendChild(button);
  },
});
