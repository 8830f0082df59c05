// Server-sent events from a fetch() response body: yields {data} for data events and {comment}
// for comment lines (": thinking: N reasoning tokens" while hidden reasoning runs). EventSource
// cannot POST or send headers, so the page reads the stream itself.

export async function* readEvents(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  const onAbort = () => reader.cancel().catch(() => {});
  signal?.addEventListener("abort", onAbort, { once: true });
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = nextBoundary(buffer)) !== null) {
        const block = buffer.slice(0, cut.index);
        buffer = buffer.slice(cut.index + cut.length);
        const event = parseBlock(block);
        if (event) yield event;
      }
    }
    const tail = parseBlock(buffer);
    if (tail) yield tail;
  } finally {
    signal?.removeEventListener("abort", onAbort);
    reader.releaseLock();
  }
}

function nextBoundary(text) {
  const m = /\r\n\r\n|\n\n|\r\r/.exec(text);
  return m ? { index: m.index, length: m[0].length } : null;
}

function parseBlock(block) {
  const data = [];
  let comment = null;
  for (const line of block.split(/\r\n|\n|\r/)) {
    if (line.startsWith(":")) comment = line.slice(1).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (data.length) return { data: data.join("\n") };
  if (comment) return { comment };
  return null;
}
