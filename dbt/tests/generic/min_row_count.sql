{#
  Fails (one row) when the model has fewer than min_rows rows: an empty or
  truncated feed should stop the run rather than train on nothing.
#}
{% test min_row_count(model, min_rows=1) %}

select n_rows
from (
    select count(*) as n_rows
    from {{ model }}
) as counted
where n_rows < {{ min_rows }}

{% endtest %}
