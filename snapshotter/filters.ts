// containerd's filter syntax, as List (Walk) receives it:
//   filters   := selector ("," selector)*        (AND; several filter strings are ORed)
//   selector  := fieldpath [op value]            (no op: the field must be present)
//   fieldpath := field ("." field)*              field: [A-Za-z0-9_]+ or a "quoted string"
//   op        := "==" | "!=" | "~="               value: "quoted" or bare up to "," (or /regex/, |regex|)
// An empty filter string matches everything (containerd's Parse("") is "always").
// Snapshot fields: name, parent, kind (active|view|committed), labels.<key>.

export interface Selector {
  path: string[];
  op?: '==' | '!=' | '~=';
  value?: string;
}

export type Filter = Selector[];

class FilterSyntaxError extends Error {}

function readQuoted(s: string, i: number, quote: string): [string, number] {
  let out = '';
  i++;
  while (i < s.length && s[i] !== quote) {
    if (s[i] === '\\' && quote === '"' && i + 1 < s.length) {
      const c = s[i + 1];
      out += c === 'n' ? '\n' : c === 't' ? '\t' : c;
      i += 2;
    } else {
      out += s[i++];
    }
  }
  if (i >= s.length) throw new FilterSyntaxError(`unterminated quote in ${JSON.stringify(s)}`);
  return [out, i + 1];
}

export function parseFilter(s: string): Filter {
  const sels: Selector[] = [];
  let i = 0;
  const ws = () => { while (s[i] === ' ') i++; };
  while (i < s.length) {
    ws();
    const path: string[] = [];
    for (;;) {
      if (s[i] === '"' || s[i] === '`') {
        const [v, j] = readQuoted(s, i, s[i]);
        path.push(v);
        i = j;
      } else {
        const m = /^[A-Za-z0-9_\-/:@+]+/.exec(s.slice(i));
        if (!m) throw new FilterSyntaxError(`bad field at ${i} in ${JSON.stringify(s)}`);
        path.push(m[0]);
        i += m[0].length;
      }
      if (s[i] === '.') { i++; continue; }
      break;
    }
    ws();
    const sel: Selector = { path };
    const op = s.slice(i, i + 2);
    if (op === '==' || op === '!=' || op === '~=') {
      sel.op = op;
      i += 2;
      ws();
      if (s[i] === '"' || s[i] === '`' || (op === '~=' && (s[i] === '/' || s[i] === '|'))) {
        const [v, j] = readQuoted(s, i, s[i]);
        sel.value = v;
        i = j;
      } else {
        let j = i;
        while (j < s.length && s[j] !== ',') j++;
        sel.value = s.slice(i, j).trim();
        i = j;
      }
    }
    sels.push(sel);
    ws();
    if (i < s.length) {
      if (s[i] !== ',') throw new FilterSyntaxError(`expected "," at ${i} in ${JSON.stringify(s)}`);
      i++;
    }
  }
  return sels;
}

export function parseFilters(filters: string[]): Filter[] {
  try {
    return filters.map((f) => (f.trim() === '' ? [] : parseFilter(f)));
  } catch (err) {
    if (err instanceof FilterSyntaxError) throw Object.assign(new Error(err.message), { invalidArgument: true });
    throw err;
  }
}

export interface Filterable {
  name: string;
  parent: string;
  kind: string;
  labels: Record<string, string>;
}

function fieldOf(x: Filterable, path: string[]): string | undefined {
  if (path.length === 1 && (path[0] === 'name' || path[0] === 'parent' || path[0] === 'kind')) {
    // Always present: containerd's unpacker looks for base layers with parent=="".
    return x[path[0]];
  }
  if (path[0] === 'labels' && path.length >= 2) {
    const key = path.slice(1).join('.');
    return Object.hasOwn(x.labels, key) ? x.labels[key] : undefined; // not labels.constructor
  }
  return undefined;
}

// As containerd's filters.selector.Match: an absent field reads as "" for != and ~=, so
// `labels.x!=""` skips snapshots without x and `labels.x~=^$` matches them; a bad regexp matches
// nothing (containerd logs it and returns false).
function matchSelector(x: Filterable, sel: Selector): boolean {
  const v = fieldOf(x, sel.path);
  if (!sel.op) return v !== undefined;
  if (sel.op === '==') return v === sel.value;
  if (sel.op === '!=') return (v ?? '') !== sel.value;
  return regexpOrNull(sel.value ?? '')?.test(v ?? '') ?? false;
}

function regexpOrNull(source: string): RegExp | null {
  try {
    return new RegExp(source);
  } catch {
    return null;
  }
}

/** No filters: everything matches. Otherwise any filter whose selectors all match. */
export function matches(x: Filterable, filters: Filter[]): boolean {
  return filters.length === 0 || filters.some((f) => f.every((sel) => matchSelector(x, sel)));
}
