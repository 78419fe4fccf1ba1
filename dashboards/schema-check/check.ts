// Type-checks the generated dashboards against Grafana 11.6's dashboard schema: the
// `Dashboard` type of @grafana/schema (the JSON model Grafana stores and its HTTP API takes).
// Run with `npm ci && npx tsc --noEmit -p .` (tests/integration/test_dashboard_schema.py does).
import type { Dashboard } from '@grafana/schema';

import overview from '../resilience-overview.json';
import service from '../resilience-service.json';

// TypeScript types a JSON module with widened primitives ("absolute" becomes string), and a
// string is never assignable to a string enum such as ThresholdsMode. So enums and literal
// unions are compared as their primitive type; everything else is checked as the schema
// declares it: which fields exist and are required, value types, arrays versus objects.
type AsJson<T> = 0 extends 1 & T
  ? T // `any` stays `any`
  : T extends string
    ? string
    : T extends number
      ? number
      : T extends boolean
        ? boolean
        : T extends readonly (infer Item)[]
          ? AsJson<Item>[]
          : T extends object
            ? { [K in keyof T]: AsJson<T[K]> }
            : T;

export const dashboards: Array<AsJson<Dashboard>> = [overview, service];
