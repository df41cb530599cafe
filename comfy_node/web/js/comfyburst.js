// "Queue on GPU": queues the current graph as ComfyUI's own Queue button does, but through this
// package's server route, which checks it with the ComfyBurst API (pre-flight) and queues a local
// prompt that runs it on a ComfyBurst GPU and saves the images that come back.
//
// Where the frontend has them, its own extension surfaces: a command (menu entry, keybinding,
// command palette), an action-bar button (frontend >= 1.32.4) and its toast service for what
// its own error display leaves out. Older frontends get the button in the legacy top-menu
// group, and a page without either (no top menu) a fixed button.
import { app } from "../../scripts/app.js";
import * as comfyApi from "../../scripts/api.js";

const { api } = comfyApi;

const COMMAND_ID = "ComfyBurst.QueueOnGpu";
const LABEL = "Queue on GPU";
const TOOLTIP = "Run this workflow on a ComfyBurst GPU";
const BUTTON_CLASS = "comfyburst-queue-on-gpu";
// The first frontend release that draws the buttons of an extension's `actionBarButtons`.
const ACTION_BAR_SINCE = [1, 32, 4];
const NOTICE_LIFE_MS = 15000;
const STATUS_ID = "comfyburst-status";
// The server's event while a queued graph waits for its GPU environment (comfy_node/_comfy.py).
const STATUS_EVENT = "comfyburst.status";

function drawsActionBarButtons() {
  const version = window.__COMFYUI_FRONTEND_VERSION__;
  if (typeof version !== "string") return false;
  const parts = version.split(".").map((part) => Number.parseInt(part, 10) || 0);
  for (let i = 0; i < ACTION_BAR_SINCE.length; i++) {
    const part = parts[i] ?? 0;
    if (part !== ACTION_BAR_SINCE[i]) return part > ACTION_BAR_SINCE[i];
  }
  return true;
}

// The refusal in words: the reason, then each refused node's type and what is wrong with it.
function describeRefusal(body) {
  const lines = [];
  const error = body.error;
  const headline = typeof error === "string" ? error : String(error?.details ?? "");
  if (headline) lines.push(headline);
  for (const [nodeId, nodeError] of Object.entries(body.node_errors ?? {})) {
    for (const reason of nodeError.errors ?? []) {
      if (reason.details && headline.includes(reason.details)) continue; // said above
      const why = [reason.message, reason.details].filter(Boolean).join(": ");
      lines.push(`${nodeError.class_type ?? "node"} #${nodeId}: ${why}`);
    }
  }
  return lines.join("\n");
}

// Frontends with an issues panel (this setting, on by default since 1.40) show a refused
// prompt's node errors there and open no dialog: the reason goes into a toast. Older ones show
// the refusal in their own dialog.
function appOpensNoDialog() {
  const setting = app.extensionManager?.setting;
  return Boolean(setting?.get?.("Comfy.RightSidePanel.ShowErrorsTab"));
}

// A toast through the frontend's toast service; false where the frontend has none.
function toast(summary, detail, severity = "error") {
  const service = app.extensionManager?.toast;
  if (typeof service?.add !== "function") return false;
  const message = { severity, summary, detail, life: NOTICE_LIFE_MS };
  service.add(message);
  return message;
}

// The status of the GPU environment being built for a queued graph: one notice, replaced by
// each update (a toast where the frontend has its service, else a small banner of our own).
// Frontends whose toasts are kept by id (1.58's toast store: `info(title, {id})` replaces the
// toast of that id; it has no `remove`) get one toast of our own id; older ones (PrimeVue's
// service) remove the message they were given before adding the next.
let statusToast = null;
function showStatus(text) {
  if (!text) return;
  const service = app.extensionManager?.toast;
  if (typeof service?.info === "function" && typeof service?.dismiss === "function") {
    service.info("ComfyBurst", { id: STATUS_ID, description: text, duration: NOTICE_LIFE_MS });
    return;
  }
  if (statusToast && typeof service?.remove === "function") service.remove(statusToast);
  statusToast = toast("ComfyBurst", text, "info");
  if (statusToast) return;
  let banner = document.getElementById(STATUS_ID);
  if (!banner) {
    banner = document.createElement("div");
    banner.id = STATUS_ID;
    banner.setAttribute("role", "status");
    banner.style.cssText =
      "position:fixed;right:12px;bottom:12px;z-index:1000;max-width:420px;padding:8px 12px;" +
      "border-radius:6px;background:#2a4365;color:#fff;font:13px sans-serif";
    document.body.appendChild(banner);
  }
  banner.textContent = `ComfyBurst: ${text}`;
  clearTimeout(banner.hideTimer);
  banner.hideTimer = setTimeout(() => banner.remove(), NOTICE_LIFE_MS);
}

async function postToGpu(_number, { output, workflow }) {
  const response = await api.fetchApi("/comfyburst/queue", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ prompt: output, workflow, client_id: api.clientId ?? "" }),
  });
  const body = await response.json();
  if (response.status !== 200) {
    // The route answers in the shape of ComfyUI's /prompt rejection: thrown as ComfyUI's own
    // error, the app marks the failing nodes (and, before its errors panel, shows a dialog).
    const summary = body.error?.message || "ComfyBurst refused the workflow";
    if (appOpensNoDialog()) toast(`ComfyBurst: ${summary}`, describeRefusal(body));
    const PromptError = comfyApi.PromptExecutionError;
    throw PromptError ? new PromptError(body) : new Error(`${summary}\n${describeRefusal(body)}`);
  }
  // Queued in a GPU environment that is being built for its custom nodes: say so at once.
  showStatus(body.comfyburst_environment?.message);
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

let inFlight = false;

// One click at a time; what fails outside a refusal (network, server) is told to the user.
async function onClick() {
  if (inFlight) return;
  inFlight = true;
  try {
    await queueOnGpu();
  } catch (error) {
    console.error(error);
    if (!toast("ComfyBurst", String(error))) app.ui?.dialog?.show(`ComfyBurst: ${error}`);
  } finally {
    inFlight = false;
  }
}

// Frontends before action-bar buttons: the legacy top-menu group, else a fixed button.
async function addFallbackButton() {
  const group = app.menu?.settingsGroup;
  if (group && typeof group.append === "function") {
    try {
      const { ComfyButton } = await import("../../scripts/ui/components/button.js");
      const button = new ComfyButton({
        icon: "cloud-upload",
        content: LABEL,
        tooltip: TOOLTIP,
        classList: `comfyui-button ${BUTTON_CLASS}`,
        action: onClick,
      });
      group.append(button);
      return;
    } catch (error) {
      console.warn("ComfyBurst: no legacy menu button, using a fixed one", error);
    }
  }
  const button = document.createElement("button");
  button.id = BUTTON_CLASS;
  button.className = BUTTON_CLASS;
  button.textContent = LABEL;
  button.title = TOOLTIP;
  button.style.cssText =
    "position:fixed;right:12px;top:46px;z-index:1000;padding:6px 12px;border-radius:6px;" +
    "background:#2b6cb0;color:#fff;border:none;cursor:pointer;font:13px sans-serif";
  button.addEventListener("click", onClick);
  document.body.appendChild(button);
}

app.registerExtension({
  name: COMMAND_ID,
  commands: [
    { id: COMMAND_ID, label: LABEL, icon: "pi pi-cloud-upload", tooltip: TOOLTIP, function: onClick },
  ],
  menuCommands: [{ path: ["ComfyBurst"], commands: [COMMAND_ID] }],
  actionBarButtons: [
    { icon: "pi pi-cloud-upload", label: LABEL, tooltip: TOOLTIP, class: BUTTON_CLASS, onClick },
  ],
  async setup() {
    if (typeof api.addEventListener === "function") {
      api.addEventListener(STATUS_EVENT, (event) => showStatus(event.detail?.message));
    }
    if (!drawsActionBarButtons()) await addFallbackButton();
  },
});
