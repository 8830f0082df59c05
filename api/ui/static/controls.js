// The reasoning controls: what the request carries for them, which ones this server's model
// accepts (the `reasoning` card of /v1/models), and readable text for HTTP errors. A control the
// server would refuse is disabled with a tooltip that says why, never silently ignored.

export const KEY_STORAGE = "splitmind-api-key";

const why = {
  noThinking: "This model has no think tokens: it does not reason, so there is nothing to switch or budget.",
  hidden: "This server hides reasoning from every client ([gateway] reasoning = \"hidden\"): only the token counter shows.",
  off: "Thinking is off.",
  budgetSet: "A thinking budget is set: clear it to choose an effort instead (the server takes one or the other).",
  effortSet: "An effort is chosen: set it back to default to give a budget instead (the server takes one or the other).",
};

let card = null;  // the model's reasoning card; null: unknown server, every control enabled

function disable(control, label, reason) {
  control.disabled = Boolean(reason);
  label.title = reason || "";
  control.title = reason || "";
}

export function refresh(ui) {
  const thinks = card ? card.thinks : true;
  const hidden = card?.visibility === "hidden";
  disable(ui.thinking, ui.thinking.closest("label"), thinks ? "" : why.noThinking);
  disable(ui.showReasoning, ui.showReasoning.closest("label"), hidden ? why.hidden : "");
  const on = thinks && ui.thinking.checked;
  const budgetSet = ui.budget.value !== "";
  const effortSet = ui.effort.value !== "";
  disable(ui.effort, ui.effort.closest("label"),
    !thinks ? why.noThinking : !on ? why.off : budgetSet ? why.budgetSet : "");
  disable(ui.budget, ui.budget.closest("label"),
    !thinks ? why.noThinking : !on ? why.off : effortSet ? why.effortSet : "");
}

export function applyCard(ui, reasoning) {
  card = reasoning ?? null;
  if (card && card.thinks === false) ui.thinking.checked = false;
  if (card?.visibility === "hidden") {
    ui.showReasoning.checked = false;
    document.body.classList.add("reasoning-off");
  }
  const efforts = card?.effort_budgets ?? { minimal: null, low: null, medium: null, high: null };
  ui.effort.replaceChildren(new Option("default", ""));
  for (const [name, budget] of Object.entries(efforts)) {
    const label = card ? `${name} (${budget === null ? "no limit" : `${budget} tokens`})` : name;
    ui.effort.append(new Option(label, name));
  }
  refresh(ui);
}

// The request fields for the controls, in the dialects splitmind documents (README, "Reasoning
// controls"): thinking off is `reasoning_effort: "none"`.
export function settingsFor(ui) {
  if (ui.thinking.disabled) return {};
  if (!ui.thinking.checked) return { reasoning_effort: "none" };
  const out = {};
  if (ui.effort.value && !ui.effort.disabled) out.reasoning_effort = ui.effort.value;
  const budget = ui.budget.value === "" ? null : Number(ui.budget.value);
  if (budget !== null && !ui.budget.disabled && Number.isInteger(budget) && budget >= 0) out.thinking_budget = budget;
  return out;
}

export async function describeHttpError(response) {
  let message = "";
  try { message = (await response.json()).error?.message || ""; } catch { /* not JSON */ }
  const detail = message ? `: ${message}` : "";
  switch (response.status) {
    case 429: {
      const after = response.headers.get("retry-after");
      return `Too many requests (429)${detail}. Try again in ${after ?? "a few"} s.`;
    }
    case 503: return `The server cannot take this request now (503)${detail}`;
    case 401: return `The server needs an API key (401): enter it above${detail}`;
    default: return `The server refused the request (${response.status})${detail}`;
  }
}
