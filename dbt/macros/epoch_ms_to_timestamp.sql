{#
  Milliseconds since the epoch -> timestamp without time zone (UTC wall clock).
  Each warehouse spells this differently, so the models call this macro and
  dbt picks the implementation for the active adapter.
#}
{% macro epoch_ms_to_timestamp(ms_column) -%}
    {{ return(adapter.dispatch('epoch_ms_to_timestamp', 'recsys')(ms_column)) }}
{%- endmacro %}

{% macro duckdb__epoch_ms_to_timestamp(ms_column) -%}
    epoch_ms(cast({{ ms_column }} as bigint))
{%- endmacro %}

{% macro snowflake__epoch_ms_to_timestamp(ms_column) -%}
    to_timestamp_ntz(cast({{ ms_column }} as bigint), 3)
{%- endmacro %}

{% macro default__epoch_ms_to_timestamp(ms_column) -%}
    {{ exceptions.raise_compiler_error(
        "epoch_ms_to_timestamp has no implementation for adapter '" ~ adapter.type() ~ "'"
    ) }}
{%- endmacro %}
