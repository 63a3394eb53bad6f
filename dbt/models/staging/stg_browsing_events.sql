-- The run's window of raw browsing events, typed and renamed.
-- Deliberately no deduplication or repair: a broken feed has to fail the tests
-- on this view, not be silently patched into the training data.
select
    -- empty strings from CSV landings count as missing, so not_null tests see them
    nullif(cast(session_id_hash as varchar), '') as session_id,
    nullif(cast(event_type as varchar), '') as event_type,
    nullif(cast(product_action as varchar), '') as product_action,
    nullif(cast(product_sku_hash as varchar), '') as sku,
    cast(server_timestamp_epoch_ms as bigint) as event_ms,
    {{ epoch_ms_to_timestamp('server_timestamp_epoch_ms') }} as event_at,
    nullif(cast(hashed_url as varchar), '') as url,
    cast(event_date as date) as event_date
from {{ source('raw', 'browsing_events') }}
-- filter on the landing day so only the window's partitions are read
where {{ in_window('event_date') }}
