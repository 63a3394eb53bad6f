{#
  Fails with one row per combination of the given columns that occurs more than
  once. GROUP BY puts nulls in one group, so two rows that are equal including
  their nulls (say, two identical pageviews without a product) count as duplicates.
  The failure count is the number of surplus rows (copies beyond the first).
#}
{% test unique_combination_of_columns(model, combination_of_columns) %}
{{ config(fail_calc='coalesce(sum(n_copies - 1), 0)') }}
{%- set columns_csv = combination_of_columns | join(', ') %}

select
    {{ columns_csv }},
    count(*) as n_copies
from {{ model }}
group by {{ columns_csv }}
having count(*) > 1

{% endtest %}
