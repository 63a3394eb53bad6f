{#
  The run's window of landing days, from the vars window_start / window_end
  (YYYY-MM-DD, both inclusive). Parsed here once so a malformed or reversed
  window stops the run at compile time instead of selecting nothing.
#}
{% macro window_bounds() -%}
    {%- set start_text = var('window_start') | string -%}
    {%- set end_text = var('window_end') | string -%}
    {%- set start_day = modules.datetime.datetime.strptime(start_text, '%Y-%m-%d').date() -%}
    {%- set end_day = modules.datetime.datetime.strptime(end_text, '%Y-%m-%d').date() -%}
    {%- if end_day < start_day -%}
        {{ exceptions.raise_compiler_error(
            "window_end (" ~ end_text ~ ") is before window_start (" ~ start_text ~ ")"
        ) }}
    {%- endif -%}
    {{ return([start_day, end_day]) }}
{%- endmacro %}

{# Every day of the window, as a list of date objects. #}
{% macro window_days() -%}
    {%- set bounds = window_bounds() -%}
    {%- set days = [] -%}
    {%- for offset in range((bounds[1] - bounds[0]).days + 1) -%}
        {%- do days.append(bounds[0] + modules.datetime.timedelta(days=offset)) -%}
    {%- endfor -%}
    {{ return(days) }}
{%- endmacro %}

{# SQL predicate: column lies in the window. Plain date literals work on every warehouse. #}
{% macro in_window(date_column) -%}
    {%- set bounds = window_bounds() -%}
    {{ date_column }} between cast('{{ bounds[0].isoformat() }}' as date)
        and cast('{{ bounds[1].isoformat() }}' as date)
{%- endmacro %}
