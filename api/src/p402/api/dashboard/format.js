// Display formatting for the dashboard.
//
// Money arrives from the API as exact decimal strings ("1234.5", "0.0005331"). It is shown
// digit for digit: grouped, padded to cents, never rounded and never turned into a binary
// float. Where the page needs a proportion of two amounts (a share, a bar length) it works
// on BigInt picodollars, so even that is exact.

const PICO_DIGITS = 12;
const DECIMAL = /^(-?)(\d+)(?:\.(\d+))?$/;

/** An exact decimal string as BigInt picodollars; null for null, undefined or non-decimals. */
export function toPicos(text) {
  if (text === null || text === undefined) return null;
  const match = DECIMAL.exec(String(text));
  if (!match) return null;
  const [, sign, whole, fraction = ""] = match;
  const digits = (fraction + "0".repeat(PICO_DIGITS)).slice(0, PICO_DIGITS);
  const picos = BigInt(whole) * 10n ** BigInt(PICO_DIGITS) + BigInt(digits);
  return sign ? -picos : picos;
}

function groupThousands(digits) {
  return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/** "1234.5" → "$1,234.50"; "0.0005331" → "$0.0005331"; null → "—". Every digit is kept. */
export function formatUsd(text) {
  if (text === null || text === undefined) return "—";
  const match = DECIMAL.exec(String(text));
  if (!match) return String(text);
  const [, sign, whole, fraction = ""] = match;
  const cents = fraction.length >= 2 ? fraction : fraction.padEnd(2, "0");
  return `${sign ? "−" : ""}$${groupThousands(whole)}.${cents}`;
}

/**
 * A decimal string rounded half away from zero to ``places`` decimals, as a decimal string:
 * for estimates only (projections, paces), whose picodollars are not meaningful.
 */
export function roundUsd(text, places) {
  const picos = toPicos(text);
  if (picos === null) return text;
  const step = 10n ** BigInt(PICO_DIGITS - places);
  const magnitude = picos < 0n ? -picos : picos;
  const rounded = ((magnitude + step / 2n) / step) * step;
  const whole = rounded / 10n ** BigInt(PICO_DIGITS);
  const fraction = String(rounded % 10n ** BigInt(PICO_DIGITS)).padStart(PICO_DIGITS, "0");
  const sign = picos < 0n && rounded > 0n ? "-" : "";
  return `${sign}${whole}.${fraction.slice(0, places)}`;
}

/** A count of events or tokens: 1234567 → "1,234,567"; null (not measured) → "—". */
export function formatCount(value) {
  if (value === null || value === undefined) return "—";
  return groupThousands(String(value));
}

/**
 * ``part`` as a proportion of ``whole`` (decimal strings), in steps of 1/``steps``, rounded
 * down, as a plain integer: for bar lengths and percentages. 0 when ``whole`` is not positive.
 */
export function proportion(part, whole, steps = 10000) {
  const p = toPicos(part);
  const w = toPicos(whole);
  if (p === null || w === null || w <= 0n || p <= 0n) return 0;
  const scaled = (p * BigInt(steps)) / w;
  return Number(scaled > BigInt(steps) ? BigInt(steps) : scaled);
}

/** ``part`` as a percentage of ``whole``, to two decimals: "41.25 %". */
export function formatShare(part, whole) {
  const basisPoints = proportion(part, whole, 10000);
  const whole100 = Math.trunc(basisPoints / 100);
  const rest = String(basisPoints % 100).padStart(2, "0");
  return `${whole100}.${rest} %`;
}

/** The larger of two decimal strings (exact comparison). */
export function maxUsd(a, b) {
  if (a === null || a === undefined) return b;
  if (b === null || b === undefined) return a;
  return toPicos(a) >= toPicos(b) ? a : b;
}

/** A percentage the API sends as a number or a decimal string: 81.5 → "81.5 %". */
export function formatPercent(value) {
  if (value === null || value === undefined) return "—";
  return `${value} %`;
}

/** A 0–1 rate or score the API sends as a number: 0.8125 → "81.3 %"; null → "—". */
export function formatRate(value) {
  if (value === null || value === undefined) return "—";
  return `${(Number(value) * 100).toFixed(1)} %`;
}

/** A quality score on the 0–1 scale, as given: 0.8125 → "0.8125"; null → "—". */
export function formatScore(value) {
  if (value === null || value === undefined) return "—";
  return String(value);
}

/** An ISO-8601 UTC timestamp as "2026-11-20 09:30 UTC". */
export function formatTime(iso) {
  if (!iso) return "—";
  const match = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})/.exec(iso);
  return match ? `${match[1]} ${match[2]} UTC` : iso;
}

/** An ISO-8601 date or date-time as "2026-11-20". */
export function formatDay(iso) {
  if (!iso) return "—";
  return String(iso).slice(0, 10);
}

const MONTHS = [
  "January", "February", "March", "April", "May", "June",
  "July", "August", "September", "October", "November", "December",
];

/** "2026-11" → "November 2026". */
export function formatMonth(month) {
  const [year, number] = month.split("-");
  return `${MONTHS[Number(number) - 1]} ${year}`;
}

/** Words of a snake_case value: "projected_over" → "projected over". */
export function words(value) {
  if (value === null || value === undefined) return "—";
  return String(value).replaceAll("_", " ");
}
