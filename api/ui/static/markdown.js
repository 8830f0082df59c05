// Markdown for answers, sanitized: a model's output is untrusted HTML. marked renders it and
// DOMPurify keeps only inert markup; the page's Content-Security-Policy is the second wall.
// When the vendored libraries are missing (setup not run), answers show as plain text.

let render = null;

export async function loadMarkdown() {
  try {
    const [{ marked }, { default: DOMPurify }] = await Promise.all([
      import("./vendor/marked.esm.js"), import("./vendor/purify.es.mjs")]);
    DOMPurify.addHook("afterSanitizeAttributes", (node) => {
      if (node.tagName === "A") {
        node.setAttribute("target", "_blank");
        node.setAttribute("rel", "noopener noreferrer");
      }
    });
    const options = { gfm: true, breaks: true, async: false };
    render = (text) => DOMPurify.sanitize(marked.parse(text, options), {
      USE_PROFILE: { html: true }, FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select"],
    });
    return true;
  } catch (err) {
    console.warn("markdown libraries unavailable, answers shown as plain text:", err);
    return false;
  }
}

export function showMarkdown(element, text) {
  if (render) element.innerHTML = render(text);
  else element.textContent = text;
}
