-- One row per session seen in the window. A session that crosses the window's
-- edge is summarised from its in-window events only.
with events as (
    select * from {{ ref('stg_browsing_events') }}
),

flagged as (
    select
        session_id,
        event_date,
        event_ms,
        case when event_type = 'pageview' then 1 else 0 end as is_pageview,
        -- the interactions a next-item model trains on (removals are not)
        case
            when event_type = 'event_product'
                and product_action in ('detail', 'add', 'purchase') then 1
            else 0
        end as is_interaction,
        case when event_type = 'event_product' and product_action = 'add' then 1 else 0 end as is_add,
        case when event_type = 'event_product' and product_action = 'purchase' then 1 else 0 end as is_purchase
    from events
)

select
    session_id,
    -- landing days only grow with time, so the first event's day is the smallest
    min(event_date) as session_date,
    min(event_ms) as started_ms,
    max(event_ms) as ended_ms,
    cast(max(event_ms) - min(event_ms) as double) / 1000 as duration_s,
    count(*) as n_events,
    sum(is_pageview) as n_pageviews,
    sum(is_interaction) as n_product_interactions,
    max(is_add) = 1 as has_add,
    max(is_purchase) = 1 as has_purchase
from flagged
group by session_id
