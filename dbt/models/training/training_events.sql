-- The training sequences: product interactions (detail / add / purchase) of
-- sessions with at least {{ var('min_session_interactions') }} of them, each
-- session cut to its last {{ var('max_session_interactions') }}, numbered 1..n
-- in time order. The export step groups by session_id ordered by position.
{%- set min_len = var('min_session_interactions') | int %}
{%- set max_len = var('max_session_interactions') | int %}

with interactions as (
    select
        session_id,
        sku,
        event_ms,
        url,
        -- same-millisecond events keep funnel order: look, then add, then buy
        case product_action
            when 'detail' then 1
            when 'add' then 2
            when 'purchase' then 3
        end as action_rank
    from {{ ref('stg_browsing_events') }}
    where event_type = 'event_product'
        and product_action in ('detail', 'add', 'purchase')
),

numbered as (
    select
        session_id,
        sku,
        event_ms,
        -- full tie-break (explicit null order: warehouses differ in their default)
        -- so the same feed always gives the same sequence
        row_number() over (
            partition by session_id
            order by
                event_ms,
                action_rank,
                sku nulls last,
                url nulls last
        ) as seq,
        count(*) over (partition by session_id) as n_interactions
    from interactions
),

kept as (
    select
        session_id,
        sku,
        event_ms,
        -- renumber so the kept tail starts at 1
        seq - greatest(n_interactions - {{ max_len }}, 0) as position
    from numbered
    where n_interactions >= {{ min_len }}
        and seq > n_interactions - {{ max_len }}
)

select
    kept.session_id,
    -- the session's date (its first event, pageviews included) drives the time split
    sessions.session_date,
    kept.position,
    kept.sku,
    kept.event_ms
from kept
inner join {{ ref('sessions') }} as sessions
    on kept.session_id = sessions.session_id
