// Few-Step Sigmas and Few-Step KSampler: draw, inside the node, the schedule it will produce (sigma on a
// log scale against step, the early non-zero end, the number of model evaluations), before anything is queued.
//
// Few-Step Sigmas shades the steps of the Timed FreeU nodes of its graph (they patch the model it is used
// with). Few-Step KSampler applies FreeU itself: with freeu = "recipe" it shades the recipe's own FreeU
// steps (the route's recipe_freeu), with "off" none; the graph's Timed FreeU nodes do not patch its model and
// are not shown on it. It has no custom widgets: it sends recipe, denoise and params only (the route's
// defaults stand in for the rest, which a named recipe or a params string replaces).
//
// The numbers come from the pack's Python code through GET /fewstep/schedule (nodes/routes.py),
// computed on the standard SD1.x / SDXL discrete schedule; nothing of the maths is repeated here. The node
// does not know its model's checkpoint, but a ModelSamplingSD3 / AuraFlow / Flux node up its model input
// says it samples a flow model: the route is then asked for the schedule on that flow axis (flow_shift),
// where no Timed FreeU acts (flow models are DiTs).
// A named recipe writes its own values into the custom widgets and disables them; `custom` makes
// them editable again (starting from the last recipe's values).
//
// After a run the node shows what it sampled: both nodes return the schedule in their ui (the route's reply,
// made by the same Python builder on the model's own table: nodes/schedule_graph.py), which ComfyUI sends to the
// page ("executed"); onExecuted keeps it and the graph draws it, labelled "as sampled: <axis>" (a plain SD3 / Flux /
// EDM checkpoint loader included, which the preview cannot see), until one of the node's schedule widgets or its
// model link changes (or the shift node up that link): then the route's preview again.
//
// The graph is a canvas widget (draw + computeSize). The classic LiteGraph canvas (the old page, and
// the current frontend's classic mode) calls its draw() on every frame, with node coordinates; Nodes
// 2.0 (the current frontend's Vue nodes, LiteGraph.vueNodesMode) draws it into a canvas of its own
// only when asked (widget.triggerDraw()). So the graph never relies on being redrawn: a widget
// callback, a cheap periodic check of every node's query (which also sees Timed FreeU nodes anywhere
// in the graph change) and the end of each request repaint it.
//
// For tests and other scripts (read-only):
//   node.fewstepSchedule = {query, recipe, params, solver, sigmas, timesteps, nfe, evaluations, unipc,
//                           afs_midpoint, freeu, axis, learned, model_time, error,
//                           plotted: [{step, sigma, x, y, kind, evaluation}], toldPlotted: [{evaluation, sigma, x, y}],
//                           surface, notes, legend, sampled, label, caption}
//     axis: {kind: "sd"} or {kind: "flow", shift} (a ModelSamplingSD3 / AuraFlow / Flux node up the model input);
//     after a run {kind: "continuous", sigma_min, sigma_max} too (EDM), and the flow shift of the model itself.
//     sampled: true when it is the schedule of the node's last run (its ui), else absent (the route's preview);
//     label: "as sampled: flow, shift 3" and the like; caption: the label as drawn (null for the preview).
//     plotted: the drawn points; x, y in node coordinates when surface is "node" (classic canvas),
//     in CSS pixels of the widget's own canvas when surface is "widget" (Nodes 2.0). kind: "evaluated"
//     (a filled dot), "end" (the last sigma, no evaluation), and with the analytical first step (UniPC
//     recipes of solver unipc_afs) "analytic" (sigma_0: a hollow dot, its model output estimated, not
//     evaluated) and "inserted" (the AFS midpoint, a diamond, at step 0.5: evaluation 1). evaluation: the
//     1-based model evaluation at that point, or null. Step k of Timed FreeU is the k-th evaluation: its
//     band runs from that evaluation's point to the next point.
//     legend: the legend lines drawn (AFS only).
//     notes: the warnings drawn on the graph (a Timed FreeU window that selects no step of the schedule).
//     On Few-Step KSampler freeu is the route's recipe_freeu with freeu = "recipe", [] with "off".
//   window.__fewstep.idle()  true when every Few-Step Sigmas / KSampler node shows the schedule of its widgets.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE_TYPE = "FewStepSigmas";
const KSAMPLER_TYPE = "FewStepKSampler";
const KSAMPLER_FREEU = "freeu"; // its widget: "recipe" (the recipe's own FreeU) or "off"
const FREEU_TYPE = "TimedFreeU";
// Core nodes that put a model on a flow time axis, and their shift (Flux: ModelSamplingFlux's own mu formula,
// whose sigma(t) is the DiscreteFlow one with shift e^mu); a core node that sets another axis ends the search.
const FLOW_SHIFTS = {
  ModelSamplingSD3: (n) => widget(n, "shift")?.value,
  ModelSamplingAuraFlow: (n) => widget(n, "shift")?.value,
  ModelSamplingFlux: (n) => {
    const [maxShift, baseShift, width, height] = ["max_shift", "base_shift", "width", "height"]
      .map((name) => Number(widget(n, name)?.value));
    const slope = (maxShift - baseShift) / (4096 - 256);
    return Math.exp((width * height / (8 * 8 * 2 * 2)) * slope + baseShift - slope * 256);
  },
};
const OTHER_AXES = new Set(["ModelSamplingDiscrete", "ModelSamplingContinuousEDM", "ModelSamplingContinuousV",
  "ModelSamplingStableCascade"]);
const ROUTE = "/fewstep/schedule";
const CUSTOM = "custom";
const QUERY_TYPES = new Set(["INT", "FLOAT", "STRING", "COMBO"]); // and lists of choices: what the route parses
// per node type, the widgets sent to the route (Few-Step Sigmas: every widget input, from nodeData)
const queryWidgets = {
  [NODE_TYPE]: ["recipe", "denoise", "steps", "base_steps", "base_rho", "end_index", "time_rho"],
  [KSAMPLER_TYPE]: ["recipe", "denoise", "params"],
};
const RECIPE_WIDGETS = ["steps", "base_steps", "base_rho", "end_index", "time_rho"]; // fixed by a named recipe
const PLOT_WIDGET = "fewstep_schedule";
const UI_KEY = "fewstep_schedule"; // the nodes' ui: {fewstep_schedule: [the schedule they sampled]}
const PLOT_HEIGHT = 180;
const MIN_WIDTH = 320;
const DEBOUNCE_MS = 150;
const CHECK_MS = 250; // the periodic check of every node's query (see above)
const MODE_MUTED = 2;
const MODE_BYPASSED = 4;
const CURVE = "#6cf"; // the schedule and the evaluated points
const INSERTED = "#f7c"; // the AFS midpoint
const TOLD = "#f96"; // a learned model time: the sigma the network is told
const SAMPLED = "#c9f"; // the "as sampled" label
const SAMPLED_TEXT = "as sampled:";

const states = new Map(); // node -> {key, timer, sequence, inFlight, labels, drawn, vue, preview, sampled}

function widget(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

// The graph's widget (the frontend may wrap the object given to addCustomWidget).
function plotWidget(node) {
  return widget(node, PLOT_WIDGET);
}

function vueNodes() {
  return !!globalThis.LiteGraph?.vueNodesMode;
}

function colour(name, fallback) {
  return globalThis.LiteGraph?.[name] ?? fallback;
}

// Windows (steps and percents) of the Timed FreeU nodes in the node's graph that are switched on.
function freeuWindows(node) {
  const graph = node.graph ?? app.graph;
  const nodes = graph?.findNodesByType?.(FREEU_TYPE, []) ?? [];
  return nodes
    .filter((n) => n.mode !== MODE_MUTED && n.mode !== MODE_BYPASSED)
    .map((n) => ["first_step", "last_step", "start_percent", "end_percent"].map((name) => widget(n, name)?.value))
    .filter(([first, last, start, end]) => Number.isInteger(first) && Number.isInteger(last) &&
      Number.isFinite(start ?? 0) && Number.isFinite(end ?? 1))
    .map(([first, last, start, end]) => `${first},${last},${start ?? 0},${end ?? 1}`);
}

// The flow shift of the model the node samples: the nearest ModelSamplingSD3 / AuraFlow / Flux node up its
// model input (through LoRA loaders, patches and reroutes; bypassed nodes pass the model on), or null.
function flowShift(node) {
  let current = node;
  for (let hops = 0; current && hops < 64; hops++) {
    const inputs = current.inputs ?? [];
    let slot = inputs.findIndex((input) => input.type === "MODEL");
    if (slot < 0 && inputs.length === 1) slot = 0; // a reroute
    const upstream = slot < 0 ? null : current.getInputNode?.(slot);
    if (!upstream) return null;
    const type = upstream.type ?? upstream.comfyClass;
    if (upstream.mode !== MODE_BYPASSED && upstream.mode !== MODE_MUTED) {
      if (type in FLOW_SHIFTS) {
        const shift = Number(FLOW_SHIFTS[type](upstream));
        return Number.isFinite(shift) && shift > 0 ? shift : null;
      }
      if (OTHER_AXES.has(type)) return null;
    }
    current = upstream;
  }
  return null;
}

function isKSampler(node) {
  return (node.fewstepKind ?? node.type) === KSAMPLER_TYPE;
}

// The query for the node's current widgets, and the part of it that decides the schedule: a named
// recipe ignores the custom widgets (writing the recipe's values into them must not ask again). On
// Few-Step KSampler the key also holds its freeu widget (which FreeU band is drawn; not sent).
function queryOf(node) {
  const ksampler = isKSampler(node);
  const params = new URLSearchParams();
  for (const name of queryWidgets[ksampler ? KSAMPLER_TYPE : NODE_TYPE]) {
    if (ksampler && !widget(node, name)) continue; // params converted to an input: the route's default
    params.set(name, String(widget(node, name)?.value ?? ""));
  }
  if (!ksampler) for (const window of freeuWindows(node)) params.append("freeu", window);
  const shift = flowShift(node);
  if (shift !== null) params.set("flow_shift", String(shift));
  const key = new URLSearchParams(params);
  if (params.get("recipe") !== CUSTOM) for (const name of RECIPE_WIDGETS) key.delete(name);
  if (ksampler) key.set(`${KSAMPLER_TYPE}.${KSAMPLER_FREEU}`, String(widget(node, KSAMPLER_FREEU)?.value ?? ""));
  return { query: params.toString(), key: key.toString() };
}

function stateOf(node) {
  let state = states.get(node);
  if (!state) {
    state = { key: null, timer: null, sequence: 0, inFlight: false, labels: {}, drawn: null, vue: null,
      preview: null, sampled: null };
    states.set(node, state);
  }
  return state;
}

// Ask for the schedule if the widgets changed since the last request (debounced).
function refresh(node) {
  if (!node.graph) return; // removed from the graph
  const state = stateOf(node);
  if (state.sampled && state.sampled.key !== runKeyOf(node)) {
    state.sampled = null; // an input of the run changed: the preview again
    show(node);
  }
  const { query, key } = queryOf(node);
  if (key === state.key) return;
  state.key = key;
  lockRecipeWidgets(node, null);
  clearTimeout(state.timer);
  state.timer = setTimeout(() => {
    state.timer = null;
    fetchSchedule(node, state, query, key);
  }, DEBOUNCE_MS);
}

async function fetchSchedule(node, state, query, key) {
  const sequence = ++state.sequence;
  state.inFlight = true;
  let schedule;
  try {
    const response = await api.fetchApi(`${ROUTE}?${query}`, { cache: "no-store" });
    const body = await response.json();
    schedule = response.ok ? body : { error: body.error ?? `HTTP ${response.status}` };
  } catch (error) {
    schedule = { error: `schedule preview unavailable: ${error.message ?? error}` };
  } finally {
    if (sequence === state.sequence) state.inFlight = false;
  }
  if (sequence !== state.sequence) return; // a newer request is on its way
  state.preview = { query: key, plotted: [], surface: null, ...schedule };
  if (isKSampler(node) && !schedule.error) { // the FreeU this node applies itself
    const on = new URLSearchParams(key).get(`${KSAMPLER_TYPE}.${KSAMPLER_FREEU}`) === "recipe";
    state.preview.freeu = on ? schedule.recipe_freeu ?? [] : [];
  }
  lockRecipeWidgets(node, schedule.error ? null : schedule);
  show(node);
}

// What identifies the node's run for its graph: the widgets that make its schedule, its model link and the flow
// shift up that link (not the Timed FreeU nodes elsewhere: their band follows the graph, as on the preview).
function runKeyOf(node) {
  const key = new URLSearchParams(queryOf(node).key);
  key.delete("freeu");
  const model = (node.inputs ?? []).find((input) => input.type === "MODEL");
  key.set("model_link", String(model?.link ?? ""));
  return key.toString();
}

// onExecuted: the schedule the node sampled (its ui), drawn until runKeyOf changes.
function showSampled(node, payload) {
  stateOf(node).sampled = { payload, key: runKeyOf(node) };
  show(node);
}

// node.fewstepSchedule: the last run's schedule while its inputs stand, else the route's preview; drawn again.
function show(node) {
  const state = stateOf(node);
  node.fewstepSchedule = state.sampled ? sampledSchedule(node, state.sampled.payload, state.preview)
    : state.preview ?? undefined;
  repaint(node);
}

// The run's schedule as the graph draws it: the FreeU band of Few-Step KSampler is its own (its ui's recipe_freeu,
// or none with freeu = off); on Few-Step Sigmas that of the graph's Timed FreeU nodes (the preview's steps: the same
// N steps), off on a flow model (a DiT).
function sampledSchedule(node, payload, preview) {
  const schedule = { ...payload, query: preview?.query ?? stateOf(node).key, plotted: [], surface: null,
    sampled: true, label: `${SAMPLED_TEXT} ${axisText(payload.axis)}` };
  if (isKSampler(node)) {
    schedule.freeu = widget(node, KSAMPLER_FREEU)?.value === "recipe" ? payload.recipe_freeu ?? [] : [];
  } else {
    const windows = preview && !preview.error ? preview.freeu ?? [] : [];
    schedule.freeu = payload.axis?.kind !== "flow" ? windows
      : windows.map((w) => ({ ...w, steps: [], warning: w.warning ?? "Timed FreeU passes a flow model through" }));
  }
  return schedule;
}

// The model's axis in words: "flow, shift 3", "continuous, σ 0.002 to 120", "SD (discrete)".
function axisText(axis) {
  const short = (value) => Number(Number(value).toPrecision(3));
  if (axis?.kind === "flow") return Number.isFinite(axis.shift) ? `flow, shift ${short(axis.shift)}` : "flow";
  if (axis?.kind === "continuous") return `continuous, \u03c3 ${short(axis.sigma_min)} to ${short(axis.sigma_max)}`;
  return "SD (discrete)";
}

// Nodes 2.0 switched on or off (a setting, no reload): the labels of the recipe's widgets follow.
function relabelOnModeChange(node, state) {
  if (state.vue !== vueNodes()) lockRecipeWidgets(node, node.fewstepSchedule?.error ? null : node.fewstepSchedule);
}

// Draw the graph again: the classic canvas on its next frame, a Nodes 2.0 widget canvas now.
function repaint(node) {
  node.setDirtyCanvas?.(true, true);
  plotWidget(node)?.triggerDraw?.();
}

// The periodic check: a changed query (a Timed FreeU node edited, a value set by a script, undo)
// asks again; a Nodes 2.0 graph that does not show the node's latest schedule is drawn again.
function checkAll() {
  for (const [node, state] of states) {
    if (!node.graph) continue;
    refresh(node);
    relabelOnModeChange(node, state);
    if (state.drawn !== (node.fewstepSchedule ?? null)) plotWidget(node)?.triggerDraw?.();
  }
}

// The new LiteGraph widgets hide the value of a disabled widget on the classic canvas; the label
// then carries it. Nodes 2.0 shows a disabled widget's value.
function valueHiddenWhenDisabled(w) {
  return typeof w.drawWidget === "function" && !vueNodes();
}

// Named recipe: its values in the custom widgets, disabled and labelled; custom: editable.
function lockRecipeWidgets(node, schedule) {
  const state = stateOf(node);
  state.vue = vueNodes();
  const named = widget(node, "recipe")?.value !== CUSTOM;
  for (const name of RECIPE_WIDGETS) {
    const w = widget(node, name);
    if (!w) continue;
    if (!(name in state.labels)) state.labels[name] = w.label;
    w.disabled = named;
    if (!named) {
      w.label = state.labels[name];
      continue;
    }
    if (schedule?.params && name in schedule.params) w.value = schedule.params[name];
    const precision = w.options?.precision;
    const shown = valueHiddenWhenDisabled(w) ? ` = ${precision === undefined ? w.value : Number(w.value).toFixed(precision)}` : "";
    w.label = `${state.labels[name] ?? name}${shown} (recipe)`;
  }
}

function drawSchedule(ctx, node, width, top) {
  refresh(node); // catches every way a widget can change (undo, paste, load, other scripts)
  const schedule = node.fewstepSchedule;
  const state = stateOf(node);
  state.drawn = schedule ?? null;
  relabelOnModeChange(node, state);
  // The classic canvas draws widgets translated to the node; Nodes 2.0 into the widget's own canvas.
  const surface = ctx.canvas && ctx.canvas === app.canvas?.canvas ? "node" : "widget";
  const margin = 10;
  const left = margin;
  const right = width - margin;
  const bottom = top + PLOT_HEIGHT - 6;
  const text = colour("WIDGET_TEXT_COLOR", "#ddd");
  const secondary = colour("WIDGET_SECONDARY_TEXT_COLOR", "#999");

  ctx.save();
  ctx.fillStyle = colour("WIDGET_BGCOLOR", "#222");
  ctx.strokeStyle = colour("WIDGET_OUTLINE_COLOR", "#666");
  ctx.beginPath();
  ctx.rect(left, top, right - left, bottom - top);
  ctx.fill();
  ctx.stroke();
  ctx.font = "12px Arial";
  ctx.textBaseline = "alphabetic";

  if (!schedule || schedule.error) {
    ctx.fillStyle = schedule ? "#f66" : secondary;
    const message = schedule ? schedule.error : "computing the schedule...";
    wrapText(ctx, message, left + 8, top + 18, right - left - 16, 15);
    ctx.restore();
    return;
  }

  const { sigmas, nfe } = schedule;
  ctx.fillStyle = text;
  ctx.textAlign = "left";
  const count = `${nfe} model evaluation${nfe === 1 ? "" : "s"}`;
  ctx.fillText(count, left + 8, top + 15);
  ctx.fillStyle = secondary;
  ctx.textAlign = "right";
  const learnedTitle = schedule.learned?.length ? " \u00b7 learned" : ""; // weights and / or model times
  const title = (schedule.solver ? `${schedule.recipe} \u00b7 ${schedule.solver}` : schedule.recipe) + learnedTitle;
  const room = right - left - 24 - ctx.measureText(count).width;
  for (let size = 12; size > 8 && ctx.measureText(title).width > room; size--) ctx.font = `${size - 1}px Arial`;
  ctx.fillText(title, right - 8, top + 15);
  ctx.font = "12px Arial";

  const plot = { left: left + 38, right: right - 14, top: top + 26, bottom: bottom - 20 };
  // A schedule with end=0 reaches sigma 0: the log scale holds the positive sigmas, 0 is drawn on the bottom edge.
  const told = schedule.model_time ?? []; // learned model times: {evaluation, sigma, told, delta}
  const logs = [...sigmas, ...told.map((t) => t.told)].filter((s) => s > 0).map((s) => Math.log10(s));
  const low = Math.min(...logs) - 0.15;
  const high = Math.max(...logs) + 0.15;
  const xOf = (step) => plot.left + (step / Math.max(nfe, 1)) * (plot.right - plot.left);
  const yOf = (sigma) => sigma > 0
    ? plot.bottom - ((Math.log10(sigma) - low) / (high - low)) * (plot.bottom - plot.top) : plot.bottom;
  const points = schedulePoints(schedule).map((p) => ({ ...p, x: xOf(p.step), y: yOf(p.sigma) }));

  // Steps where a Timed FreeU window is on: step k (the k-th model evaluation) is the interval from the
  // point of that evaluation to the next point (with AFS, step 1 starts at the inserted midpoint).
  const freeuSteps = new Set((schedule.freeu ?? []).flatMap((w) => w.steps));
  const band = (step) => {
    const i = points.findIndex((p) => p.evaluation === step);
    return i < 0 || i + 1 >= points.length ? null : [points[i].x, points[i + 1].x];
  };
  const bands = [...freeuSteps].map(band).filter(Boolean);
  if (bands.length) {
    ctx.fillStyle = "rgba(110, 200, 120, 0.18)";
    for (const [from, to] of bands) ctx.fillRect(from, plot.top, to - from, plot.bottom - plot.top);
  }
  // Lines of text (the "as sampled" caption, the AFS legend, Timed FreeU notes, the end=0 label) go top right, where
  // a descending curve is low; when the curve stays high into the last steps (a flow schedule), under it, left.
  // Under the curve they end above the early stop's label, bottom right.
  const caption = schedule.sampled ? schedule.label : null;
  const flow = schedule.axis?.kind === "flow";
  const notes = (schedule.freeu ?? []).filter((w) => w.warning)
    .map((w) => `Timed FreeU ${w.first_step}..${w.last_step}: ${flow ? "off on a flow model" : `no step of ${nfe}`}`);
  const last = points[points.length - 1];
  const endLabelY = Math.min(last.y - 7, plot.bottom - 4);
  const learnedText = learnedLegend(schedule);
  const lineCount = (caption ? 2 : 0) + (schedule.afs_midpoint ? 2 : 0) + (learnedText ? 1 : 0) + notes.length
    + (last.sigma > 0 ? 0 : 1);
  const probe = points[Math.min(points.length - 1, Math.ceil(points.length * 0.6))];
  const underCurve = probe.y < (plot.top + plot.bottom) / 2;
  const lowest = last.sigma > 0 ? endLabelY - 13 : plot.bottom - 4;
  const firstUnder = Math.max(plot.top + 34, lowest - 12 * (lineCount - 1));
  const textLine = (i) => underCurve ? { x: plot.left + 6, y: firstUnder + 12 * i, align: "left" }
    : { x: plot.right - 4, y: plot.top + 11 + 12 * i, align: "right" };
  const writeLine = (i, words) => {
    const at = textLine(i);
    ctx.textAlign = at.align;
    ctx.fillText(words, at.x, at.y);
    return at;
  };
  // After a run: what was sampled, on which axis, in two lines (clear of the first sigma's label, top left).
  const captionLines = caption ? [SAMPLED_TEXT, caption.slice(SAMPLED_TEXT.length + 1)] : [];
  const lead = captionLines.length; // lines above the legend and notes
  ctx.font = "11px Arial";
  ctx.fillStyle = SAMPLED;
  captionLines.forEach((line, i) => writeLine(i, line));
  // The analytical first step (UniPC recipes with AFS): what the two special markers mean.
  const legend = [];
  ctx.font = "10px Arial";
  if (schedule.afs_midpoint) {
    legend.push({ kind: "analytic", text: "\u03c3\u2080: analytic, no model evaluation" },
                { kind: "inserted", text: "AFS midpoint (inserted): evaluation 1" });
  }
  // A learned model time (the tuner's learn): the sigma each evaluation's network is told, where it is not its own.
  if (learnedText) legend.push({ kind: "told", text: learnedText });
  legend.forEach((entry, i) => {
    ctx.fillStyle = secondary;
    const at = textLine(lead + i);
    const right = at.align === "right";
    ctx.textAlign = at.align;
    ctx.fillText(entry.text, right ? at.x : at.x + 12, at.y); // the marker before the text
    marker(ctx, entry.kind, right ? at.x - 8 - ctx.measureText(entry.text).width : at.x + 4, at.y - 3.5, 0.8);
  });
  // A Timed FreeU whose step window selects no step of this schedule (the route says so), or any on a flow model.
  ctx.fillStyle = "#fb4";
  notes.forEach((note, i) => writeLine(lead + legend.length + i, note));
  if (bands.length) {
    // "FreeU" at the band's left: at the bottom where the curve is high (the band starts in the left half),
    // else at the top under the legend and notes (the curve is low there; the end label is at the bottom)
    const from = Math.min(...bands.map(([x]) => x));
    const lines = lead + legend.length + notes.length;
    ctx.fillStyle = "rgba(140, 220, 150, 0.9)";
    ctx.textAlign = "left";
    ctx.font = "12px Arial";
    const atBottom = from < (plot.left + plot.right) / 2;
    ctx.fillText("FreeU", from + 3, atBottom ? plot.bottom - 4 : plot.top + 13 + 12 * lines);
    ctx.font = "10px Arial";
  }

  // Decades of sigma: grid lines and labels.
  ctx.strokeStyle = "rgba(128, 128, 128, 0.35)";
  ctx.fillStyle = secondary;
  ctx.textAlign = "right";
  ctx.font = "10px Arial";
  for (let decade = Math.ceil(low); decade <= Math.floor(high); decade++) {
    const y = yOf(10 ** decade);
    ctx.beginPath();
    ctx.moveTo(plot.left, y);
    ctx.lineTo(plot.right, y);
    ctx.stroke();
    ctx.fillText(decade >= 0 ? String(10 ** decade) : (10 ** decade).toFixed(-decade), plot.left - 4, y + 3);
  }
  ctx.save();
  ctx.translate(left + 9, (plot.top + plot.bottom) / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textAlign = "center";
  const shift = schedule.axis?.shift;
  ctx.fillText(flow && Number.isFinite(shift) ? `sigma (log), flow shift ${Number(shift.toPrecision(3))}` : "sigma (log)",
    0, 0);
  ctx.restore();

  // Step numbers under the points.
  ctx.textAlign = "center";
  const every = Math.ceil((nfe + 1) / 12);
  for (let step = 0; step <= nfe; step += every) ctx.fillText(String(step), xOf(step), plot.bottom + 13);

  // The schedule.
  ctx.strokeStyle = CURVE;
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  points.forEach((p, i) => (i ? ctx.lineTo(p.x, p.y) : ctx.moveTo(p.x, p.y)));
  ctx.stroke();
  for (const p of points.slice(0, -1)) marker(ctx, p.kind, p.x, p.y, 1);
  // A learned model time: a dashed line from the evaluation's point to the sigma its network is told.
  const toldPlotted = [];
  for (const t of told) {
    const p = points.find((q) => q.evaluation === t.evaluation);
    if (!p) continue;
    const y = yOf(t.told);
    ctx.save();
    ctx.strokeStyle = TOLD;
    ctx.lineWidth = 1;
    ctx.setLineDash([2, 2]);
    ctx.beginPath();
    ctx.moveTo(p.x, p.y);
    ctx.lineTo(p.x, y);
    ctx.stroke();
    ctx.restore();
    marker(ctx, "told", p.x, y, 1);
    toldPlotted.push({ evaluation: t.evaluation, sigma: t.told, x: p.x, y });
  }

  // The early stop: the last sigma is not zero (or, with end=0, the last step goes to 0).
  const end = points[points.length - 1];
  const endLabel = end.sigma > 0 ? `stops at \u03c3 = ${formatSigma(end.sigma)}, not 0` : "ends at \u03c3 = 0 (end=0)";
  ctx.fillStyle = "#fb4";
  ctx.beginPath();
  ctx.arc(end.x, end.y, 4.5, 0, 2 * Math.PI);
  ctx.fill();
  ctx.font = "11px Arial";
  ctx.textAlign = "right";
  // end=0: the curve falls to the bottom edge at the right, so the label goes with the other lines, under them
  if (end.sigma > 0) ctx.fillText(endLabel, end.x - 8, endLabelY);
  else writeLine(lead + legend.length + notes.length, endLabel);
  ctx.fillStyle = text;
  ctx.textAlign = "left";
  // the first sigma's value beside its point, or under the curve where it starts flat (a flow schedule)
  const flat = points.length > 1 && points[1].y - points[0].y < 12;
  ctx.fillText(`\u03c3 = ${formatSigma(points[0].sigma)}`, points[0].x + 7, points[0].y + (flat ? 16 : 4));
  ctx.restore();

  node.fewstepSchedule.plotted = points;
  node.fewstepSchedule.toldPlotted = toldPlotted;
  node.fewstepSchedule.notes = notes;
  node.fewstepSchedule.legend = legend.map((entry) => entry.text);
  node.fewstepSchedule.caption = caption;
  node.fewstepSchedule.surface = surface;
}

// The legend line for a learned model time (the title says "learned" for weights too): what the triangles mark.
function learnedLegend(schedule) {
  const moved = (schedule.model_time ?? []).length;
  return moved ? `\u03c3 the network is told (${moved} of ${schedule.nfe})` : null;
}

// The points to draw, at fractional steps: sigma_k at step k; with the analytical first step the inserted
// midpoint at step 0.5 (half way in timestep space, where the sampler puts it). Each point says which model
// evaluation happens there (the route's evaluations), if any.
function schedulePoints(schedule) {
  const { sigmas, nfe } = schedule;
  const afs = schedule.afs_midpoint;
  const points = sigmas.map((sigma, step) => ({
    step, sigma, kind: step === nfe ? "end" : afs && step === 0 ? "analytic" : "evaluated",
    evaluation: step === nfe || (afs && step === 0) ? null : step + 1,
  }));
  if (afs) points.splice(1, 0, { step: 0.5, sigma: afs.sigma, kind: "inserted", evaluation: 1 });
  return points;
}

// A point's marker: a filled dot (a model evaluation), a hollow one (sigma_0 with AFS: estimated, not
// evaluated), a diamond (the AFS midpoint). The end point is drawn with its label below.
function marker(ctx, kind, x, y, scale) {
  ctx.save();
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  if (kind === "analytic") {
    ctx.arc(x, y, 4.5 * scale, 0, 2 * Math.PI);
    ctx.fillStyle = colour("WIDGET_BGCOLOR", "#222"); // covers the curve: hollow
    ctx.fill();
    ctx.strokeStyle = CURVE;
    ctx.stroke();
  } else if (kind === "told") {
    const r = 4 * scale; // a hollow triangle pointing down
    ctx.moveTo(x - r, y - r * 0.8);
    ctx.lineTo(x + r, y - r * 0.8);
    ctx.lineTo(x, y + r);
    ctx.closePath();
    ctx.strokeStyle = TOLD;
    ctx.stroke();
  } else if (kind === "inserted") {
    const r = 5 * scale;
    ctx.moveTo(x, y - r);
    ctx.lineTo(x + r, y);
    ctx.lineTo(x, y + r);
    ctx.lineTo(x - r, y);
    ctx.closePath();
    ctx.fillStyle = INSERTED;
    ctx.fill();
  } else {
    ctx.arc(x, y, 3 * scale, 0, 2 * Math.PI);
    ctx.fillStyle = CURVE;
    ctx.fill();
  }
  ctx.restore();
}

function formatSigma(sigma) {
  return sigma >= 10 ? sigma.toFixed(1) : sigma >= 1 ? sigma.toFixed(2) : sigma.toPrecision(3);
}

function wrapText(ctx, message, x, y, maxWidth, lineHeight) {
  let line = "";
  for (const word of String(message).split(" ")) {
    const candidate = line ? `${line} ${word}` : word;
    if (line && ctx.measureText(candidate).width > maxWidth) {
      ctx.fillText(line, x, y);
      line = word;
      y += lineHeight;
    } else {
      line = candidate;
    }
  }
  if (line) ctx.fillText(line, x, y);
}

function setUp(node) {
  const names = queryWidgets[isKSampler(node) ? KSAMPLER_TYPE : NODE_TYPE];
  for (const name of isKSampler(node) ? [...names, KSAMPLER_FREEU] : names) {
    const w = widget(node, name);
    if (!w) continue;
    const callback = w.callback;
    w.callback = function (...args) {
      const result = callback?.apply(this, args);
      refresh(node);
      return result;
    };
  }
  node.addCustomWidget({
    type: PLOT_WIDGET,
    name: PLOT_WIDGET,
    value: null,
    serialize: false, // not a node input: neither in the saved workflow nor in the prompt
    options: { serialize: false },
    computeSize: (width) => [width ?? MIN_WIDTH, PLOT_HEIGHT],
    draw(ctx, drawnNode, width, y) {
      drawSchedule(ctx, drawnNode, width, y);
    },
  });
  const size = node.computeSize();
  node.setSize([Math.max(node.size[0], size[0], MIN_WIDTH), Math.max(node.size[1], size[1])]);
  refresh(node);
}

app.registerExtension({
  name: "ComfyUI-FewStep.FewStepSigmas", // and Few-Step KSampler

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE_TYPE && nodeData.name !== KSAMPLER_TYPE) return;
    const inputs = { ...nodeData.input?.required, ...nodeData.input?.optional };
    const isWidget = (type) => Array.isArray(type) || QUERY_TYPES.has(type);
    const widgets = Object.keys(inputs).filter((name) => isWidget(inputs[name]?.[0]));
    if (nodeData.name === NODE_TYPE) queryWidgets[NODE_TYPE] = widgets;
    else queryWidgets[KSAMPLER_TYPE] = queryWidgets[KSAMPLER_TYPE].filter((name) => widgets.includes(name));
    nodeType.prototype.fewstepKind = nodeData.name;

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function (...args) {
      const result = onNodeCreated?.apply(this, args);
      setUp(this);
      return result;
    };

    // After a run: the ui of the node (ComfyUI's "executed" message), the schedule it sampled.
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output, ...args) {
      const result = onExecuted?.apply(this, [output, ...args]);
      const payload = output?.[UI_KEY]?.at?.(-1);
      if (payload?.sigmas) showSampled(this, payload);
      return result;
    };

    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function (...args) {
      const result = onConfigure?.apply(this, args);
      refresh(this);
      return result;
    };

    // The old LiteGraph saves every widget's value; keep the plot out of widgets_values.
    const onSerialize = nodeType.prototype.onSerialize;
    nodeType.prototype.onSerialize = function (serialised, ...args) {
      const result = onSerialize?.apply(this, [serialised, ...args]);
      const index = this.widgets?.findIndex((w) => w.name === PLOT_WIDGET) ?? -1;
      if (index >= 0 && serialised.widgets_values?.length > index) serialised.widgets_values.splice(index, 1);
      return result;
    };

    const onRemoved = nodeType.prototype.onRemoved;
    nodeType.prototype.onRemoved = function (...args) {
      clearTimeout(states.get(this)?.timer);
      states.delete(this);
      return onRemoved?.apply(this, args);
    };
  },
});

setInterval(checkAll, CHECK_MS);

globalThis.__fewstep = {
  idle() {
    for (const [node, state] of states) {
      if (!node.graph) continue;
      if (state.timer !== null || state.inFlight || queryOf(node).key !== state.key) return false;
      if (state.sampled && state.sampled.key !== runKeyOf(node)) return false; // a run's schedule, inputs since changed
      if (!node.fewstepSchedule || node.fewstepSchedule.query !== state.key) return false;
    }
    return true;
  },
};
