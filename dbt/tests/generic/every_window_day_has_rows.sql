{#
  Fails with one row per day of the run's window (vars window_start..window_end)
  that has no rows in the model's date column: a landing day is missing.
  The expected days are written out as literals, which every warehouse accepts.
#}
{% test every_window_day_has_rows(model, column_name) %}

with expected_days as (
    {%- for day in window_days() %}
    select cast('{{ day.isoformat() }}' as date) as missing_day
    {%- if not loop.last %} union all{% endif %}
    {%- endfor %}
),

present_days as (
    select distinct {{ column_name }} as present_day
    from {{ model }}
)

select expected_days.missing_day
from expected_days
left join present_days
    on expected_days.missing_day = present_days.present_day
where present_days.present_day is null

{% endtest %}
