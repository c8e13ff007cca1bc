// The P402 finance dashboard: every panel is drawn from one aggregate API route (spend
// rollups, budgets, projections, observations, anomalies, receipts), never from a listing of
// all events; ranked panels ask the API for their top rows only (``limit``). Each panel
// shows its data, "no data yet", "not available on this server" or the API's error,
// independently of the others.

import {
  ApiError,
  apiUrl,
  forgetKey,
  getBlob,
  getJson,
  keyFromFragment,
  storedKey,
  storeKey,
} from "./api.js";
import {
  formatCount,
  formatDay,
  formatMonth,
  formatPercent,
  formatRate,
  formatScore,
  formatShare,
  formatTime,
  formatUsd,
  maxUsd,
  proportion,
  roundUsd,
  toPicos,
  words,
} from "./format.js";

const LEADERBOARD_SIZE = 10;
const SESSION_PAGE = 20;
const SESSION_EVENTS = 50;
const ANOMALY_PAGE = 20;
const AT_RISK = new Set(["warning", "projected_over", "exceeded"]);

let apiKey = null;
let requests = new Map();
let refreshes = 0;  // the latest refresh: panels drawn for an earlier one are dropped

// --- DOM helpers --------------------------------------------------------------------------

/** An element with attributes and children; strings become text nodes (never HTML). */
function el(tag, attributes = {}, ...children) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.setAttribute("class", value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "onclick") node.addEventListener("click", value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** An estimate (a projection, a pace): shown to the cent from $100, else to 1/100 cent;
 * the exact figure stays in the title and ``data-usd``. */
function estimate(text) {
  if (text === null || text === undefined) return money(text);
  const places = (toPicos(text) ?? 0n) >= 100_000_000_000_000n ? 2 : 4;
  return el("span", { class: "usd estimate", title: `${text} USD (estimate)`, dataset: { usd: text } }, formatUsd(roundUsd(text, places)));
}

function money(text) {
  return el("span", { class: "usd", title: text === null ? "no cost" : `${text} USD`, dataset: { usd: text ?? "" } }, formatUsd(text));
}

/** A group's cost: "unpriced" when none of its events has a cost (never shown as $0). */
function groupCost(row) {
  if (row.events > 0 && row.unpriced_events === row.events) {
    return el("span", { class: "muted", title: "none of these events has a cost: the price data does not know the model, or the usage is missing" }, "unpriced");
  }
  return money(row.cost_usd);
}

function badge(value) {
  return el("span", { class: `badge badge-${value ?? "none"}` }, words(value));
}

/** A horizontal bar ``part``/``whole`` of the cell's width (exact proportion of amounts). */
function shareBar(part, whole) {
  const fill = el("span", { class: "bar-fill" });
  fill.style.width = `${proportion(part, whole, 10000) / 100}%`;
  return el("span", { class: "bar", "aria-hidden": "true" }, fill);
}

/** A table: ``columns`` are {label, numeric?, cell(row) → string | Node}. */
function table(columns, rows, rowAttributes = () => ({})) {
  return el("div", { class: "table-wrap" }, el(
    "table",
    {},
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", { class: c.numeric ? "num" : null, scope: "col" }, c.label)))),
    el(
      "tbody",
      {},
      rows.map((row) => el("tr", rowAttributes(row), columns.map((c) => el("td", { class: c.numeric ? "num" : c.className ?? null }, c.cell(row))))),
    ),
  ));
}

/** Replace ``body``'s content with ``nodes``, leaving out the absent ones. */
function fill(body, ...nodes) {
  body.replaceChildren(...nodes.filter((node) => node !== null && node !== undefined && node !== false));
}

function message(kind, text) {
  return el("p", { class: `state-message ${kind}` }, text);
}

// --- the period ---------------------------------------------------------------------------

function currentMonth() {
  return new Date().toISOString().slice(0, 7);
}

function selectedMonth() {
  const value = document.getElementById("month").value;
  return /^\d{4}-\d{2}$/.test(value) ? value : currentMonth();
}

/** The whole UTC days of a month as the API's from/to (answered from the daily rollups). */
function monthRange(month) {
  const [year, number] = month.split("-").map(Number);
  const next = number === 12 ? `${year + 1}-01` : `${year}-${String(number + 1).padStart(2, "0")}`;
  return { from: `${month}-01`, to: `${next}-01` };
}

function daysIn(month) {
  const [year, number] = month.split("-").map(Number);
  return new Date(Date.UTC(year, number, 0)).getUTCDate();
}

// --- requests -----------------------------------------------------------------------------

/** One API answer per route and parameters for each refresh, shared by the panels. */
function load(path, params = {}) {
  const id = apiUrl(path, params).toString();
  if (!requests.has(id)) requests.set(id, getJson(apiKey, path, params));
  return requests.get(id);
}

/** This month's spend per ``groupBy`` group, most costly first (``limit`` groups at most). */
function spendBy(groupBy, limit = undefined) {
  const params = { group_by: groupBy, ...monthRange(selectedMonth()) };
  if (limit !== undefined) params.limit = limit;
  return load("/v1/spend", params);
}

async function optional(promise) {
  try {
    return await promise;
  } catch (error) {
    if (error instanceof ApiError && error.missing) return null;
    throw error;
  }
}

// --- panels -------------------------------------------------------------------------------

function setKpi(id, value, note) {
  const kpi = document.getElementById(id);
  const figure = kpi.querySelector('[data-field="value"]');
  figure.replaceChildren(value);
  kpi.querySelector('[data-field="note"]').replaceChildren(note ?? "");
}

/** The organisation's end-of-month projection: its monthly budget's (as the budgets panel
 * shows it), else /v1/projections' own. */
function organisationProjection(projections, budgets) {
  const candidates = [...(budgets?.data ?? []), ...(projections?.data ?? [])];
  const organisation = candidates.find(
    (item) => item.scope === "organization" && (item.period ?? "month") === "month" && item.projected_usd != null,
  );
  if (organisation) return organisation;
  return projections?.total?.projected_usd != null ? projections.total : null;
}

/** Whether a budget's end-of-period projection passes its cap (whatever its status). */
function projectedOver(budget) {
  const projected = toPicos(budget.projected_usd);
  const cap = toPicos(budget.cap_usd);
  return projected !== null && cap !== null && projected > cap;
}

async function kpisPanel(body, generation) {
  const month = selectedMonth();
  const isCurrent = month === currentMonth();
  const [spend, budgets, projections] = await Promise.all([
    spendBy("department"),
    optional(load("/v1/budgets")),
    optional(load("/v1/projections")),
  ]);
  if (generation !== refreshes) return "stale";  // a later refresh draws the KPIs
  const total = spend.total;
  let unpriced = "all events priced";
  if (!total.events) unpriced = "no events yet";
  else if (total.unpriced_events) unpriced = `${formatCount(total.unpriced_events)} unpriced event(s) carry no cost`;
  setKpi("kpi-spend", money(total.cost_usd), unpriced);
  setKpi(
    "kpi-events",
    formatCount(total.events),
    `${formatCount(total.input_tokens)} tokens in · ${formatCount(total.output_tokens)} out`,
  );

  if (!isCurrent) {
    setKpi("kpi-projection", "—", "projections cover the current month");
  } else if (projections === null && budgets === null) {
    setKpi("kpi-projection", "—", "not available on this server");
  } else {
    const projection = organisationProjection(projections, budgets);
    if (projection) {
      const cap = projection.cap_usd != null ? ` against a cap of ${formatUsd(projection.cap_usd)}` : "";
      setKpi("kpi-projection", estimate(projection.projected_usd), `at the current pace${cap}`);
    } else {
      setKpi("kpi-projection", "—", "no organisation budget to project yet");
    }
  }

  if (!isCurrent) {
    setKpi("kpi-budgets", "—", "budgets stand for the current month");
    document.getElementById("kpi-budgets").dataset.risk = "no";
  } else if (budgets === null) {
    setKpi("kpi-budgets", "—", "not available on this server");
  } else {
    const all = budgets.data ?? [];
    const atRisk = all.filter((budget) => AT_RISK.has(budget.status));
    const count = (status) => atRisk.filter((budget) => budget.status === status).length;
    const over = all.filter(projectedOver).length;
    setKpi(
      "kpi-budgets",
      all.length ? `${atRisk.length} of ${all.length}` : "—",
      all.length
        ? `${count("exceeded")} exceeded · ${count("warning")} above 80 % · ${over} projected over the cap`
        : "no budgets set yet",
    );
    document.getElementById("kpi-budgets").dataset.risk = atRisk.length ? "yes" : "no";
  }
  return total.events ? "ready" : "empty";
}

async function timeseriesPanel(body) {
  const month = selectedMonth();
  const answer = await load("/v1/spend/timeseries", { interval: "day", ...monthRange(month) });
  // Every day of the range is present; days without events carry zero and draw no bar.
  const rows = (answer.data ?? []).filter((row) => row.events > 0);
  if (!rows.length) {
    fill(body, message("empty", `No spend recorded for ${formatMonth(month)} yet.`));
    return "empty";
  }
  const byDay = new Map(rows.map((row) => [formatDay(row.start), row]));
  const days = daysIn(month);
  let highest = null;
  for (const row of rows) highest = maxUsd(highest, row.cost_usd);
  const width = 600;
  const height = 230;
  const left = 8;
  const top = 12;
  const plot = height - top - 24;
  const slot = (width - left * 2) / days;
  const chart = el("svg:svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": `Daily spend, ${formatMonth(month)}` });
  chart.append(el("svg:line", { x1: left, x2: width - left, y1: top, y2: top, class: "gridline" }));
  chart.append(el("svg:line", { x1: left, x2: width - left, y1: top + plot / 2, y2: top + plot / 2, class: "gridline" }));
  chart.append(el("svg:line", { x1: left, x2: width - left, y1: top + plot, y2: top + plot, class: "axis" }));
  for (let day = 1; day <= days; day += 1) {
    const date = `${month}-${String(day).padStart(2, "0")}`;
    const row = byDay.get(date);
    const x = left + (day - 1) * slot;
    if (row) {
      const barHeight = Math.max((proportion(row.cost_usd, highest, 1000) / 1000) * plot, row.events ? 1 : 0);
      const bar = el(
        "svg:rect",
        { x: x + slot * 0.15, width: slot * 0.7, y: top + plot - barHeight, height: barHeight, class: "bar-day", dataset: { day: date, usd: row.cost_usd ?? "" } },
        el("svg:title", {}, `${date}: ${formatUsd(row.cost_usd)} · ${formatCount(row.events)} events`),
      );
      chart.append(bar);
    }
    if (day === 1 || day % 5 === 0) {
      chart.append(el("svg:text", { x: x + slot / 2, y: height - 6, class: "tick", "text-anchor": "middle" }, String(day)));
    }
  }
  const peak = rows.find((row) => row.cost_usd === highest);
  const peakDay = formatDay(peak.start);
  fill(body, 
    el("p", { class: "chart-legend" }, "Top line: ", money(highest), ` (highest day, ${peakDay}) · middle line: half of it · days of ${formatMonth(month)}`),
    chart,
  );
  return "ready";
}

function ownerLabel(value, none) {
  return value === null || value === undefined || value === "" ? el("span", { class: "muted" }, none) : value;
}

async function departmentsPanel(body) {
  const answer = await spendBy("department");
  const rows = answer.data ?? [];
  if (!rows.length) {
    fill(body, message("empty", `No spend recorded for ${formatMonth(selectedMonth())} yet.`));
    return "empty";
  }
  const total = (await spendBy("")).total.cost_usd;
  fill(body, 
    table(
      [
        { label: "Department", cell: (row) => ownerLabel(row.department, "(unattributed)") },
        { label: "Spend", numeric: true, cell: groupCost },
        { label: "Share", cell: (row) => el("span", { class: "share" }, shareBar(row.cost_usd, total), formatShare(row.cost_usd, total)) },
        { label: "Events", numeric: true, cell: (row) => formatCount(row.events) },
        { label: "Tokens in / out", numeric: true, cell: (row) => `${formatCount(row.input_tokens)} / ${formatCount(row.output_tokens)}` },
      ],
      rows,
      (row) => ({ dataset: { department: row.department ?? "" } }),
    ),
    el("p", { class: "table-total" }, "Total ", money(total), ` · ${formatCount(answer.total.events)} events`),
    answer.next_cursor ? el("p", { class: "table-total" }, `The ${rows.length} most costly departments are shown.`) : null,
  );
  return "ready";
}

async function employeesPanel(body) {
  const answer = await spendBy("employee", LEADERBOARD_SIZE);
  const rows = answer.data ?? [];
  if (!rows.length) {
    fill(body, message("empty", `No spend recorded for ${formatMonth(selectedMonth())} yet.`));
    return "empty";
  }
  const total = (await spendBy("")).total.cost_usd;
  fill(body, 
    table(
      [
        { label: "#", numeric: true, cell: (row) => String(rows.indexOf(row) + 1) },
        { label: "Employee", cell: (row) => ownerLabel(row.employee, "(no employee)") },
        { label: "Spend", numeric: true, cell: groupCost },
        { label: "Share", numeric: true, cell: (row) => formatShare(row.cost_usd, total) },
        { label: "Events", numeric: true, cell: (row) => formatCount(row.events) },
      ],
      rows,
      (row) => ({ dataset: { employee: row.employee ?? "" } }),
    ),
    answer.next_cursor
      ? el("p", { class: "table-total" }, `The ${rows.length} most costly employees are shown, of a total of `, money(total), ".")
      : null,
  );
  return "ready";
}

async function modelsPanel(body) {
  const answer = await spendBy("provider,model");
  const rows = answer.data ?? [];
  if (!rows.length) {
    fill(body, message("empty", `No spend recorded for ${formatMonth(selectedMonth())} yet.`));
    return "empty";
  }
  const total = (await spendBy("")).total.cost_usd;
  const strip = el("div", { class: "mix", "aria-hidden": "true" });
  rows.forEach((row, index) => {
    const segment = el("span", { class: `mix-${index % 8}`, title: `${row.model ?? "unknown"}: ${formatShare(row.cost_usd, total)}` });
    segment.style.width = `${proportion(row.cost_usd, total, 10000) / 100}%`;
    strip.append(segment);
  });
  fill(body, 
    strip,
    table(
      [
        { label: "Model", cell: (row) => el("span", { class: "model" }, el("span", { class: `swatch mix-${rows.indexOf(row) % 8}` }), ownerLabel(row.model, "(unknown)")) },
        { label: "Provider", cell: (row) => ownerLabel(row.provider, "—") },
        { label: "Spend", numeric: true, cell: groupCost },
        { label: "Share", numeric: true, cell: (row) => formatShare(row.cost_usd, total) },
        { label: "Events", numeric: true, cell: (row) => formatCount(row.events) },
      ],
      rows,
      (row) => ({ dataset: { model: row.model ?? "" } }),
    ),
    answer.next_cursor ? el("p", { class: "table-total" }, `The ${rows.length} most costly models are shown, of a total of `, money(total), ".") : null,
    ...rows
      .filter((row) => row.unpriced_events > 0)
      .map((row) =>
        el("p", { class: "table-total" }, `${row.model ?? "(unknown)"}: ${formatCount(row.unpriced_events)} of its events are unpriced (no cost, never counted as 0).`),
      ),
  );
  return "ready";
}

function budgetName(budget) {
  return budget.scope === "organization" ? "organisation" : `${budget.scope}: ${budget.name}`;
}

async function budgetsPanel(body) {
  const [answer, projections] = await Promise.all([
    optional(load("/v1/budgets")),
    optional(load("/v1/projections")),
  ]);
  if (answer === null) {
    fill(body, message("unavailable", "Budgets are not available on this server."));
    return "unavailable";
  }
  const rows = answer.data ?? [];
  if (!rows.length) {
    fill(body, message("empty", "No budgets set yet (PUT /v1/budgets with an admin key)."));
    return "empty";
  }
  const projectionOf = new Map((projections?.data ?? []).map((item) => [item.budget_id, item]));
  fill(body, 
    table(
      [
        { label: "Budget", cell: (row) => budgetName(row) },
        { label: "Period", cell: (row) => row.period ?? "month" },
        { label: "Spent", numeric: true, cell: (row) => money(row.spent_usd) },
        { label: "Cap", numeric: true, cell: (row) => money(row.cap_usd) },
        {
          label: "Used",
          cell: (row) => {
            const gauge = el("span", { class: `gauge gauge-${row.status}` }, shareBar(row.spent_usd, row.cap_usd));
            return el("span", { class: "share" }, gauge, formatPercent(row.consumed_pct));
          },
        },
        {
          label: "Pace per day",
          numeric: true,
          cell: (row) => {
            const projection = projectionOf.get(row.id);
            return projection ? estimate(projection.velocity_usd_per_day) : el("span", { class: "muted" }, "—");
          },
        },
        {
          label: "Projected",
          numeric: true,
          cell: (row) => {
            const overage = projectionOf.get(row.id)?.overage_usd;
            return el(
              "span",
              { class: "projected" },
              estimate(row.projected_usd),
              overage ? el("span", { class: "overage", title: `${overage} USD over the cap` }, `${formatUsd(roundUsd(overage, 4))} over`) : null,
            );
          },
        },
        { label: "At cap", cell: (row) => words(row.action_at_cap) },
        { label: "Status", cell: (row) => badge(row.status) },
      ],
      rows,
      (row) => ({ dataset: { scope: row.scope, name: row.name ?? "", status: row.status ?? "" } }),
    ),
    projections === null ? el("p", { class: "table-total" }, "Projections are not available on this server.") : null,
  );
  return "ready";
}

function tierTable(observation) {
  return table(
    [
      { label: "Tier", cell: (tier) => words(tier.tier) },
      { label: "Models (events)", cell: (tier) => Object.entries(tier.models ?? {}).map(([model, events]) => `${model} (${formatCount(events)})`).join(", ") || "—" },
      { label: "Events", numeric: true, cell: (tier) => formatCount(tier.events) },
      { label: "Cost", numeric: true, cell: (tier) => money(tier.cost_usd) },
      { label: "Mean per call", numeric: true, cell: (tier) => money(tier.mean_cost_usd) },
      { label: "Outcomes", numeric: true, cell: (tier) => formatCount(tier.outcomes) },
      { label: "Accepted", numeric: true, cell: (tier) => formatRate(tier.acceptance_rate) },
      { label: "Scored", numeric: true, cell: (tier) => formatCount(tier.scored_outcomes) },
      { label: "Mean quality", numeric: true, cell: (tier) => formatScore(tier.mean_quality) },
    ],
    observation.tiers ?? [],
    (tier) => ({ dataset: { tier: tier.tier } }),
  );
}

async function observationsPanel(body) {
  const answer = await optional(load("/v1/observations", { limit: 50 }));
  if (answer === null) {
    fill(body, message("unavailable", "Routing observations are not available on this server."));
    return "unavailable";
  }
  const rows = answer.data ?? [];
  if (!rows.length) {
    fill(body, message("empty", "No routing observations yet: they need events with a task type and are computed every few minutes."));
    return "empty";
  }
  fill(body, 
    ...rows.map((observation) =>
      el(
        "article",
        { class: "observation", dataset: { taskType: observation.task_type } },
        el(
          "header",
          {},
          el("h3", {}, words(observation.task_type)),
          badge(observation.recommendation?.status),
          el("span", { class: "muted" }, `${formatDay(observation.window_start)} to ${formatDay(observation.window_end)}`),
        ),
        el("p", { class: "reason" }, observation.recommendation?.reason ?? ""),
        tierTable(observation),
      ),
    ),
  );
  return "ready";
}

async function anomaliesPanel(body) {
  const answer = await optional(load("/v1/anomalies", { limit: ANOMALY_PAGE }));
  if (answer === null) {
    fill(body, message("unavailable", "The anomaly queue is not available on this server."));
    return "unavailable";
  }
  const rows = answer.data ?? [];
  if (!rows.length) {
    fill(body, message("empty", "No anomalous sessions: nothing to review."));
    return "empty";
  }
  fill(body, 
    table(
      [
        { label: "Detected", className: "nowrap", cell: (row) => formatTime(row.detected_at) },
        { label: "Session", cell: (row) => el("code", {}, row.session) },
        { label: "Employee", cell: (row) => ownerLabel(row.employee, "—") },
        { label: "Department", cell: (row) => ownerLabel(row.department, "—") },
        { label: "Session cost", numeric: true, cell: (row) => money(row.cost_usd) },
        { label: "Usual session", numeric: true, cell: (row) => money(row.baseline_usd) },
        { label: "Ratio", numeric: true, cell: (row) => `${row.ratio}×` },
        { label: "Status", cell: (row) => badge(row.status) },
      ],
      rows,
      (row) => ({ dataset: { session: row.session, status: row.status } }),
    ),
    answer.next_cursor ? el("p", { class: "table-total" }, `The ${rows.length} most recent are shown.`) : null,
  );
  return "ready";
}

// --- session log --------------------------------------------------------------------------

/** A link to a receipt route that fetches it with the key and saves it as a file. */
function receiptLink(receiptId, suffix, accept, label) {
  const path = `/v1/receipts/${encodeURIComponent(receiptId)}${suffix}`;
  const link = el("a", { href: path, class: "receipt-link", dataset: { receipt: receiptId, format: label.toLowerCase() } }, label);
  link.addEventListener("click", async (click) => {
    click.preventDefault();
    link.classList.add("busy");
    try {
      const blob = await getBlob(apiKey, path, accept);
      const url = URL.createObjectURL(blob);
      const save = el("a", { href: url, download: `receipt-${receiptId}.${label.toLowerCase()}` });
      document.body.append(save);
      save.click();
      save.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (error) {
      link.title = `could not fetch the receipt: ${error.message}`;
      link.classList.add("failed");
    } finally {
      link.classList.remove("busy");
    }
  });
  return link;
}

async function showSessionEvents(row, session, button) {
  const next = row.nextElementSibling;
  if (next && next.classList.contains("session-events")) {
    next.remove();
    button.setAttribute("aria-expanded", "false");
    return;
  }
  button.setAttribute("aria-expanded", "true");
  const cell = el("td", { colspan: row.children.length }, message("loading", "Loading the session's events…"));
  const detail = el("tr", { class: "session-events" }, cell);
  row.after(detail);
  try {
    const answer = await getJson(apiKey, "/v1/events", { session, limit: SESSION_EVENTS });
    fill(cell, 
      table(
        [
          { label: "Time", className: "nowrap", cell: (event) => formatTime(event.timestamp) },
          { label: "Model", cell: (event) => event.model_used ?? event.model_requested ?? "—" },
          { label: "Tokens in", numeric: true, cell: (event) => formatCount(event.input_tokens) },
          { label: "Tokens out", numeric: true, cell: (event) => formatCount(event.output_tokens) },
          { label: "Cost", numeric: true, cell: (event) => money(event.cost_usd) },
          { label: "Cost evidence", cell: (event) => words(event.cost_evidence) },
          { label: "Policy", cell: (event) => words(event.policy_result) },
          { label: "Outcome", cell: (event) => words(event.outcome) },
        ],
        answer.data ?? [],
      ),
      answer.next_cursor ? el("p", { class: "table-total" }, `The ${SESSION_EVENTS} most recent events are shown.`) : null,
    );
  } catch (error) {
    fill(cell, message("error", `Could not load the events: ${error.message}`));
  }
}

/** The evidence and receipt cells of a session whose latest receipt is ``receiptId``, in
 * ``status`` (sealed, or anchored once its anchor is final). */
function receiptCells(receiptId, status) {
  if (!receiptId) return [el("span", { class: "muted", title: "sealed once idle, or when closed" }, "not sealed yet"), null];
  const links = [
    receiptLink(receiptId, "", "application/json", "JSON"),
    " · ",
    receiptLink(receiptId, ".pdf", "application/pdf", "PDF"),
  ];
  return [badge(status ?? "sealed"), links];
}

/** Rows of the session log: ``rows`` (sessions, most costly first) ranked from ``first``,
 * each with its latest receipt. */
function sessionRows(rows, first, total) {
  return rows.map((spend, index) => {
    const session = spend.session;
    const button = el("button", { type: "button", class: "link", "aria-expanded": "false", title: "show this session's events" }, session);
    const [evidence, links] = receiptCells(spend.receipt_id, spend.receipt_status);
    const dataset = { session };
    if (spend.receipt_id) dataset.receipt = spend.receipt_id;
    const row = el(
      "tr",
      { dataset },
      el("td", { class: "num" }, String(first + index + 1)),
      el("td", { class: "nowrap" }, button),
      el("td", { class: "num" }, formatCount(spend.events)),
      el("td", { class: "num" }, formatCount(spend.input_tokens)),
      el("td", { class: "num" }, formatCount(spend.output_tokens)),
      el("td", { class: "num" }, groupCost(spend)),
      el("td", { class: "num" }, formatShare(spend.cost_usd, total)),
      el("td", {}, evidence),
      el("td", { class: "links" }, links ?? el("span", { class: "muted" }, "—")),
    );
    button.addEventListener("click", () => showSessionEvents(row, session, button));
    return row;
  });
}

async function sessionsPanel(body) {
  const range = monthRange(selectedMonth());
  const question = { limit: SESSION_PAGE, ...range };
  const answer = await load("/v1/sessions", question);
  const rows = answer.data ?? [];
  if (!rows.length) {
    fill(body, message("empty", `No sessions recorded for ${formatMonth(selectedMonth())} yet.`));
    return "empty";
  }
  const total = (await spendBy("")).total.cost_usd;
  const headings = ["#", "Session", "Events", "Tokens in", "Tokens out", "Cost", "Share", "Evidence", "Receipt"];
  const numeric = new Set(["#", "Events", "Tokens in", "Tokens out", "Cost", "Share"]);
  const tbody = el("tbody", {}, sessionRows(rows, 0, total));
  let shown = rows.length;  // (the table also holds the rows of expanded sessions' events)
  const more = el("p", { class: "table-total" });
  let cursor = answer.next_cursor;
  const showMore = () => {
    fill(more);
    if (!cursor) return;
    const button = el("button", {
      type: "button",
      class: "quiet",
      onclick: async () => {
        button.disabled = true;
        try {
          const page = await getJson(apiKey, "/v1/sessions", { ...question, cursor });
          tbody.append(...sessionRows(page.data ?? [], shown, total));
          shown += (page.data ?? []).length;
          cursor = page.next_cursor;
          showMore();
        } catch (error) {
          button.disabled = false;
          button.title = `could not load more sessions: ${error.message}`;
        }
      },
    }, "Show the next sessions");
    more.append(button);
  };
  showMore();
  fill(body, 
    el("div", { class: "table-wrap" }, el("table", {}, el("thead", {}, el("tr", {}, headings.map((h) => el("th", { scope: "col", class: numeric.has(h) ? "num" : null }, h)))), tbody)),
    more,
  );
  return "ready";
}

// --- wiring -------------------------------------------------------------------------------

const PANELS = {
  kpis: kpisPanel,
  timeseries: timeseriesPanel,
  departments: departmentsPanel,
  employees: employeesPanel,
  models: modelsPanel,
  budgets: budgetsPanel,
  observations: observationsPanel,
  anomalies: anomaliesPanel,
  sessions: sessionsPanel,
};

/** Draw a panel for refresh ``generation``: into a detached body, shown only if no later
 * refresh began meanwhile (a slow answer for another month never replaces this one's). */
async function drawPanel(id, draw, generation) {
  const section = document.getElementById(id);
  const body = section.querySelector(".body");
  section.dataset.state = "loading";
  const draft = body ? el("div") : null;
  try {
    const state = await draw(draft, generation);
    if (generation !== refreshes) return;
    if (body) body.replaceChildren(...draft.childNodes);
    section.dataset.state = state;
  } catch (error) {
    if (generation !== refreshes) return;
    if (error instanceof ApiError && error.unauthorised) throw error;
    const missing = error instanceof ApiError && error.missing;
    const text = missing ? "Not available on this server." : `Could not load: ${error.message}`;
    if (body) fill(body, message(missing ? "unavailable" : "error", text));
    else for (const kpi of section.querySelectorAll(".kpi")) setKpi(kpi.id, "—", text);
    section.dataset.state = missing ? "unavailable" : "error";
  }
}

async function refresh() {
  const generation = ++refreshes;
  requests = new Map();
  const label = formatMonth(selectedMonth());
  for (const span of document.querySelectorAll(".period-label")) span.textContent = label;
  const results = await Promise.allSettled(Object.entries(PANELS).map(([id, draw]) => drawPanel(id, draw, generation)));
  if (generation !== refreshes) return;
  const refused = results.find((result) => result.status === "rejected" && result.reason instanceof ApiError);
  if (refused) {
    const error = refused.reason;
    askForKey(error.status === 403 ? "This key cannot read the ledger: use a key with the read role." : "The key was not accepted; enter a valid read key.");
  } else {
    document.body.dataset.loaded = "true";
  }
}

function askForKey(text = "") {
  forgetKey();
  apiKey = null;
  document.getElementById("dashboard").hidden = true;
  document.getElementById("controls").hidden = true;
  document.getElementById("key-prompt").hidden = false;
  document.getElementById("key-message").textContent = text;
  document.getElementById("key-input").focus();
}

function open(key) {
  apiKey = key;
  document.getElementById("key-prompt").hidden = true;
  document.getElementById("dashboard").hidden = false;
  document.getElementById("controls").hidden = false;
  return refresh();
}

function start() {
  const month = document.getElementById("month");
  month.value = currentMonth();
  month.max = currentMonth();
  month.addEventListener("change", refresh);
  document.getElementById("refresh").addEventListener("click", refresh);
  document.getElementById("forget-key").addEventListener("click", () => askForKey("The key was removed from this browser."));
  document.getElementById("key-form").addEventListener("submit", (submit) => {
    submit.preventDefault();
    const key = document.getElementById("key-input").value.trim();
    if (!key) return;
    storeKey(key, document.getElementById("remember-key").checked);
    document.getElementById("key-input").value = "";
    open(key);
  });
  // A "#key=..." link opened in this tab, now or later, replaces the key in use.
  window.addEventListener("hashchange", () => {
    const key = keyFromFragment();
    if (key) {
      storeKey(key, false);
      open(key);
    }
  });
  const fromFragment = keyFromFragment();
  if (fromFragment) storeKey(fromFragment, false);
  const key = fromFragment ?? storedKey();
  if (key) open(key);
  else askForKey();
}

start();
