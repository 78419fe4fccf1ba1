"""The vocabulary of the read-only rule in :mod:`._sql`: which statements may be read-only,
which words make one a write, and which functions are known to change nothing (or something).

Names are upper-case for keywords, lower-case for functions (as :mod:`._sql` compares them).
The lists err on the side of caution: a missing safe function only costs a retry, a missing
writer could repeat a side effect.
"""

from __future__ import annotations

__all__ = [
    "ANALYZE",
    "NAMING",
    "NOT_CALLS",
    "READ_FIRST",
    "ROW_LOCKS",
    "SAFE_FUNCTIONS",
    "WRITER_FUNCTIONS",
    "WRITER_PREFIXES",
    "WRITE_WORDS",
]

# First words of statements that may be read-only; anything else is a write.
READ_FIRST = frozenset({"SELECT", "SHOW", "VALUES", "TABLE", "WITH", "EXPLAIN"})
# Words that make a statement a write wherever they appear (outside literals, comments and
# quoted identifiers): data-modifying CTEs, SELECT ... INTO, FOR UPDATE, what EXPLAIN ANALYZE
# runs, and every statement verb, as a second line of defence.
WRITE_WORDS = frozenset(
    {
        *("INSERT", "UPDATE", "DELETE", "MERGE", "INTO", "COPY", "CREATE", "ALTER", "DROP"),
        *("TRUNCATE", "GRANT", "REVOKE", "LOCK", "CALL", "DO", "NOTIFY", "EXECUTE", "DECLARE"),
    }
)
ROW_LOCKS = frozenset({"UPDATE", "SHARE", "NO", "KEY"})  # FOR UPDATE / SHARE / NO KEY / KEY
ANALYZE = frozenset({"ANALYZE", "ANALYSE"})
NAMING = frozenset({"as", "with", "recursive"})  # the word before a name with a column list
# Words followed by "(" that are syntax or type modifiers, not function calls.
NOT_CALLS = frozenset(
    {
        *("select", "from", "where", "and", "or", "not", "in", "exists", "any", "all", "some"),
        *("values", "as", "on", "using", "over", "filter", "within", "join", "lateral"),
        *("union", "intersect", "except", "when", "then", "else", "case", "row", "array"),
        *("cast", "having", "by", "limit", "offset", "distinct", "window", "rollup", "cube"),
        *("sets", "grouping", "with", "recursive", "materialized", "table", "explain", "is"),
        *("like", "ilike", "similar", "between", "fetch", "tablesample", "repeatable"),
        *("int", "integer", "smallint", "bigint", "numeric", "decimal", "float", "real"),
        *("varchar", "char", "character", "varying", "bit", "varbit", "time", "timestamp"),
        *("timestamptz", "timetz", "interval", "bpchar"),
    }
)
# Built-in functions without side effects (volatile ones like now() or random() included:
# running them twice changes nothing).
SAFE_FUNCTIONS = frozenset(
    {
        *("count", "sum", "avg", "min", "max", "bool_and", "bool_or", "every", "array_agg"),
        *("string_agg", "json_agg", "jsonb_agg", "json_object_agg", "jsonb_object_agg"),
        *("stddev", "variance", "percentile_cont", "percentile_disc", "mode", "row_number"),
        *("rank", "dense_rank", "lag", "lead", "first_value", "last_value", "nth_value"),
        *("ntile", "cume_dist", "percent_rank", "coalesce", "nullif", "greatest", "least"),
        *("lower", "upper", "length", "char_length", "octet_length", "substr", "substring"),
        *("trim", "btrim", "ltrim", "rtrim", "replace", "concat", "concat_ws", "left", "right"),
        *("split_part", "strpos", "position", "format", "to_char", "to_date", "to_timestamp"),
        *("to_number", "abs", "round", "ceil", "ceiling", "floor", "trunc", "mod", "power"),
        *("sqrt", "exp", "ln", "log", "sign", "random", "now", "clock_timestamp"),
        *("statement_timestamp", "transaction_timestamp", "date_trunc", "date_part"),
        *("extract", "age", "make_date", "make_timestamp", "make_interval", "generate_series"),
        *("unnest", "array_length", "array_position", "cardinality", "array_to_string"),
        *("string_to_array", "regexp_replace", "regexp_matches", "regexp_split_to_array"),
        *("md5", "encode", "decode", "to_json", "to_jsonb", "json_build_object"),
        *("jsonb_build_object", "json_build_array", "jsonb_build_array", "row_to_json"),
        *("jsonb_extract_path", "jsonb_extract_path_text", "json_extract_path_text"),
        *("jsonb_array_elements", "json_array_elements", "jsonb_each", "jsonb_typeof"),
        *("jsonb_set", "gen_random_uuid", "current_setting", "version", "pg_sleep"),
        *("initcap", "repeat", "lpad", "rpad", "reverse", "translate", "chr", "ascii"),
        *("starts_with", "regexp_like", "regexp_count", "regexp_substr", "quote_ident"),
        *("quote_literal", "quote_nullable", "div", "pi", "width_bucket", "date_bin"),
        *("justify_days", "justify_hours", "justify_interval", "isfinite", "timezone"),
        *("array_cat", "array_append", "array_prepend", "array_remove", "array_replace"),
        *("array_dims", "array_lower", "array_upper", "array_ndims", "array_fill"),
        *("json_array_length", "jsonb_array_length", "jsonb_pretty", "jsonb_strip_nulls"),
        *("json_each", "json_each_text", "jsonb_each_text", "jsonb_object_keys"),
        *("json_object_keys", "jsonb_path_exists", "jsonb_path_match", "jsonb_path_query"),
        *("jsonb_path_query_array", "jsonb_path_query_first", "jsonb_insert", "json_typeof"),
        *("to_tsvector", "to_tsquery", "plainto_tsquery", "websearch_to_tsquery", "ts_rank"),
        *("ts_headline", "num_nulls", "num_nonnulls", "date", "text", "int4", "int8"),
        *("float8", "bool", "uuid", "json", "jsonb", "current_database", "current_schema"),
        *("current_schemas", "pg_backend_pid", "pg_is_in_recovery", "pg_postmaster_start_time"),
        *("inet_server_addr", "inet_server_port", "pg_typeof", "pg_column_size"),
        *("pg_relation_size", "pg_total_relation_size", "pg_table_size", "pg_indexes_size"),
        *("pg_database_size", "pg_size_pretty", "pg_get_viewdef", "format_type"),
        *("to_regclass", "to_regtype", "obj_description", "col_description"),
        *("has_table_privilege", "has_schema_privilege", "has_database_privilege"),
    }
)
# Built-in functions that change something: a write even when the caller trusts functions.
WRITER_FUNCTIONS = frozenset({"nextval", "setval", "pg_notify", "set_config", "lowrite"})
WRITER_PREFIXES = (
    *("pg_advisory", "pg_try_advisory", "lo_", "dblink", "pg_terminate", "pg_cancel"),
    *("pg_reload", "pg_rotate", "pg_switch", "pg_create", "pg_drop", "pg_stat_reset"),
    *("pg_replication", "pg_logical", "pg_promote", "pg_import", "pg_copy"),
)
