// "Extract": the JSON Schemas offered for pulling structured data out of a page, how a schema is
// described to the model in words, and how the extracted value is laid out as tables.
//
// The engine constrains the output to the schema (llguidance, through response_format json_schema),
// so the answer always parses and validates; the schemas are written so that a small model does well:
// - one object with one array property ({"contacts": [...]}): the model starts with the list at once
//   and can end it after any item (an empty list is valid for a page without any);
// - every field required, in a fixed order, with "" (or null) for "not on the page": no choice of keys
//   to make, and no invented values forced by a format the page does not have;
// - maxItems and maxLength bounds, so a model that does not stop still ends within the answer budget;
// - string formats only where llguidance has them (date: YYYY-MM-DD). Emails and phone numbers are
//   patterns that also allow "": llguidance's "email" format would force an invented address when the
//   page has none (and a model left to a plain string writes URLs there), and there is no phone
//   format. "date-time" is avoided: pages rarely give a time zone.

/** Bounds shared by the built-in schemas (items per list, characters per field). */
const MAX_ITEMS = 10;
const SHORT = 80;
const LONG = 200;

const text = (maxLength, description) => ({ type: "string", maxLength, description });

/** The built-in schemas: a label for the menu, the words the request uses, the schema itself. */
export const SCHEMAS = {
  contacts: {
    label: "Contacts (name, email, phone, organization)",
    what: "the people and organizations with their contact details",
    schema: {
      type: "object",
      properties: {
        contacts: {
          type: "array",
          maxItems: MAX_ITEMS,
          items: {
            type: "object",
            properties: {
              name: text(SHORT, "a person's or an organization's name"),
              email: { ...text(SHORT, "an email address as written on the page, or empty"), pattern: "^([A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)+)?$" },
              phone: { ...text(32, "a phone number as written on the page, or empty"), pattern: "^([+(0-9][0-9 ()./-]*)?$" },
              organization: text(SHORT, "the organization the person belongs to, or empty"),
              role: text(SHORT, "their job title or role, or empty"),
            },
            required: ["name", "email", "phone", "organization", "role"],
            additionalProperties: false,
          },
        },
      },
      required: ["contacts"],
      additionalProperties: false,
    },
  },
  events: {
    label: "Events (title, date, time, location)",
    what: "the events with their dates, times and places",
    schema: {
      type: "object",
      properties: {
        events: {
          type: "array",
          maxItems: MAX_ITEMS,
          items: {
            type: "object",
            properties: {
              title: text(SHORT, "what happens"),
              date: { anyOf: [{ type: "string", format: "date" }, { type: "null" }], description: "YYYY-MM-DD, or null if the page gives none" },
              time: { anyOf: [{ type: "string", pattern: "^([01][0-9]|2[0-3]):[0-5][0-9]$" }, { type: "null" }], description: "HH:MM (24 h), or null" },
              location: text(SHORT, "where, or empty"),
              description: text(LONG, "one short sentence, or empty"),
            },
            required: ["title", "date", "time", "location", "description"],
            additionalProperties: false,
          },
        },
      },
      required: ["events"],
      additionalProperties: false,
    },
  },
  facts: {
    label: "Key facts (a list of short facts)",
    what: "the key facts, each one short sentence with its topic",
    schema: {
      type: "object",
      properties: {
        facts: {
          type: "array",
          maxItems: 8,
          items: {
            type: "object",
            properties: {
              fact: text(LONG, "one short sentence"),
              topic: text(40, "one or two words"),
            },
            required: ["fact", "topic"],
            additionalProperties: false,
          },
        },
      },
      required: ["facts"],
      additionalProperties: false,
    },
  },
};

/** The menu value for a schema the user pastes. */
export const CUSTOM = "custom";

/** A user error about a pasted schema (shown as is, the panel stays usable). */
export class SchemaError extends Error {}

/**
 * Parse a pasted JSON Schema. Throws SchemaError naming the problem: not JSON (with the parser's
 * position), or JSON that is not a schema (a schema is an object, or true/false).
 */
export function parseCustomSchema(source) {
  const src = String(source ?? "").trim();
  if (!src) throw new SchemaError("Paste a JSON Schema first (an object such as {\"type\": \"object\", \"properties\": {…}}).");
  let schema;
  try {
    schema = JSON.parse(src);
  } catch (err) {
    throw new SchemaError(`Your schema is not valid JSON: ${err.message}.`);
  }
  if (schema === null || Array.isArray(schema) || (typeof schema !== "object" && typeof schema !== "boolean")) {
    const kind = schema === null ? "null" : Array.isArray(schema) ? "an array" : `a ${typeof schema}`;
    throw new SchemaError(`Your schema is ${kind}: a JSON Schema is an object, such as {"type": "object", "properties": {…}}.`);
  }
  return schema;
}

/**
 * What to ask for, in words, for a schema without a built-in description: its title or description,
 * else its top-level properties with the fields of their items ("people (name, email); date").
 * Cheap on purpose: the constraint enforces the structure, the words only tell the model what to look for.
 */
export function describeSchema(schema) {
  if (typeof schema !== "object" || schema === null) return "the data";
  const own = schema.description ?? schema.title;
  if (typeof own === "string" && own.trim()) return own.trim().slice(0, 200);
  const props = schema.properties && typeof schema.properties === "object" ? Object.entries(schema.properties) : [];
  if (props.length === 0) return "the data";
  const fields = (s) => {
    const item = s?.type === "array" || s?.items ? s.items : s;
    const keys = item && typeof item.properties === "object" ? Object.keys(item.properties) : [];
    return keys.length ? ` (${keys.slice(0, 8).join(", ")})` : "";
  };
  return props
    .slice(0, 8)
    .map(([k, s]) => `${k}${fields(s)}`)
    .join("; ");
}

/** A value in a table cell: strings as they are, anything else as compact JSON. */
export function cellText(v) {
  if (v === undefined) return "";
  if (typeof v === "string") return v;
  return JSON.stringify(v);
}

const isPlainObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

/** One array as a table: objects → a column per key (in first-seen order), other items → one column. */
function arrayTable(caption, arr) {
  if (arr.length > 0 && arr.every(isPlainObject)) {
    const columns = [...new Set(arr.flatMap((o) => Object.keys(o)))];
    return { caption, columns, rows: arr.map((o) => columns.map((c) => cellText(o[c]))) };
  }
  return { caption, columns: ["value"], rows: arr.map((v) => [cellText(v)]) };
}

/**
 * The extracted value as tables ({caption, columns, rows: string[][]}): each array property is a
 * table of its own (so {"contacts": [...]} is one table of contacts), the other properties one
 * field/value table; a top-level array is one table, a scalar a single cell.
 */
export function toTables(value) {
  if (Array.isArray(value)) return [arrayTable("", value)];
  if (!isPlainObject(value)) return [{ caption: "", columns: ["value"], rows: [[cellText(value)]] }];
  const tables = [];
  const rest = [];
  for (const [k, v] of Object.entries(value)) {
    if (Array.isArray(v)) tables.push(arrayTable(k, v));
    else rest.push([k, cellText(v)]);
  }
  if (rest.length) tables.unshift({ caption: "", columns: ["field", "value"], rows: rest });
  return tables;
}
