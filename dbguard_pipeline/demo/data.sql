-- Deterministic demo rows: ids are md5-derived uuids, so every load gives the same bytes.
-- Three tenants; every child row carries the same tenant as its parent (100% coverage, no orphans).
INSERT INTO public.tenants (id, name, slug, created_at)
SELECT md5('tenant:' || t)::uuid, (ARRAY['Acme Motors', 'Bright Garage Group', 'City Fleet Services'])[t],
       (ARRAY['acme', 'bright', 'cityfleet'])[t], timestamptz '2025-01-01 09:00+00' + (t || ' days')::interval
FROM generate_series(1, 3) AS t;

-- 9 users, user u belongs to tenant ((u - 1) % 3) + 1
INSERT INTO auth.users (id, email, raw_user_meta_data, created_at)
SELECT md5('user:' || u)::uuid, 'user' || u || '@example.com',
       jsonb_build_object('full_name', 'User ' || u), timestamptz '2025-01-05 09:00+00' + (u || ' hours')::interval
FROM generate_series(1, 9) AS u;

INSERT INTO public.profiles (id, tenant_id, full_name, role, created_at)
SELECT md5('user:' || u)::uuid, md5('tenant:' || ((u - 1) % 3 + 1))::uuid, 'User ' || u,
       (ARRAY['owner', 'admin', 'inspector'])[(u - 1) / 3 + 1], timestamptz '2025-01-05 10:00+00'
FROM generate_series(1, 9) AS u;

INSERT INTO public.user_tenants (user_id, tenant_id, role, created_at)
SELECT md5('user:' || u)::uuid, md5('tenant:' || ((u - 1) % 3 + 1))::uuid, 'member', timestamptz '2025-01-05 11:00+00'
FROM generate_series(1, 9) AS u
UNION ALL  -- user 1 also consults for tenant 2
SELECT md5('user:1')::uuid, md5('tenant:2')::uuid, 'consultant', timestamptz '2025-02-01 11:00+00';

INSERT INTO public.garages (id, tenant_id, name, address, created_at)
SELECT md5('garage:' || g)::uuid, md5('tenant:' || ((g - 1) % 3 + 1))::uuid, 'Garage ' || g,
       g || ' Workshop Lane', timestamptz '2025-01-10 09:00+00'
FROM generate_series(1, 6) AS g;

-- 22 vehicles; vehicle v belongs to tenant ((v - 1) % 3) + 1 and to that tenant's garage
INSERT INTO public.vehicles (id, tenant_id, garage_id, vin, make, model, year, deleted_at, created_at)
SELECT md5('vehicle:' || v)::uuid, md5('tenant:' || ((v - 1) % 3 + 1))::uuid,
       md5('garage:' || (((v - 1) % 3 + 1) + 3 * ((v / 3) % 2)))::uuid,
       'VIN' || lpad(v::text, 14, '0'), (ARRAY['Toyota', 'Ford', 'Volvo', 'Renault'])[v % 4 + 1],
       (ARRAY['Corolla', 'Transit', 'XC60', 'Clio'])[v % 4 + 1], 2010 + v % 14,
       CASE WHEN v % 7 = 0 THEN timestamptz '2025-06-01 00:00+00' END, timestamptz '2025-02-01 09:00+00'
FROM generate_series(1, 22) AS v;

-- 25 images of vehicle ((i - 1) % 22) + 1
INSERT INTO public.vehicle_images (id, tenant_id, vehicle_id, storage_path, is_primary, created_at)
SELECT md5('image:' || i)::uuid, md5('tenant:' || ((((i - 1) % 22 + 1) - 1) % 3 + 1))::uuid,
       md5('vehicle:' || ((i - 1) % 22 + 1))::uuid, 'inspections/' || i || '.jpg', i <= 22,
       timestamptz '2025-03-01 09:00+00'
FROM generate_series(1, 25) AS i;

INSERT INTO public.photo_metadata (id, tenant_id, image_id, width, height, exif)
SELECT md5('photo:' || i)::uuid, md5('tenant:' || ((((i - 1) % 22 + 1) - 1) % 3 + 1))::uuid,
       md5('image:' || i)::uuid, 4032, 3024, jsonb_build_object('iso', 100 + i)
FROM generate_series(1, 25) AS i;

-- 12 capture sessions on vehicle s, started by a user of the same tenant
INSERT INTO public.capture_sessions (id, tenant_id, vehicle_id, started_by, status, started_at)
SELECT md5('session:' || s)::uuid, md5('tenant:' || ((s - 1) % 3 + 1))::uuid, md5('vehicle:' || s)::uuid,
       md5('user:' || ((s - 1) % 3 + 1))::uuid, CASE WHEN s % 3 = 0 THEN 'open' ELSE 'closed' END,
       timestamptz '2025-04-01 09:00+00' + (s || ' hours')::interval
FROM generate_series(1, 12) AS s;

-- 30 events of vehicle ((e - 1) % 22) + 1
INSERT INTO public.vehicle_events (id, tenant_id, vehicle_id, event_type, date, notes)
SELECT md5('event:' || e)::uuid, md5('tenant:' || ((((e - 1) % 22 + 1) - 1) % 3 + 1))::uuid,
       md5('vehicle:' || ((e - 1) % 22 + 1))::uuid, (ARRAY['inspection', 'repair', 'damage'])[e % 3 + 1],
       date '2025-05-01' + e, 'Event ' || e
FROM generate_series(1, 30) AS e;

-- 20 event photos: event m with image m (same vehicle, same tenant)
INSERT INTO public.event_photos (id, tenant_id, event_id, image_id)
SELECT md5('event_photo:' || m)::uuid, md5('tenant:' || ((m - 1) % 3 + 1))::uuid, md5('event:' || m)::uuid,
       md5('image:' || m)::uuid
FROM generate_series(1, 20) AS m;

-- 40 audit log rows of event ((l - 1) % 30) + 1
INSERT INTO public.vehicle_event_audit_logs (id, tenant_id, event_id, action, actor, at)
SELECT md5('audit:' || l)::uuid, md5('tenant:' || ((((((l - 1) % 30 + 1) - 1) % 22 + 1) - 1) % 3 + 1))::uuid,
       md5('event:' || ((l - 1) % 30 + 1))::uuid, (ARRAY['created', 'updated'])[l % 2 + 1],
       md5('user:' || ((((((l - 1) % 30 + 1) - 1) % 22 + 1) - 1) % 3 + 1))::uuid,
       timestamptz '2025-05-02 09:00+00' + (l || ' minutes')::interval
FROM generate_series(1, 40) AS l;

INSERT INTO public.vision_accuracy (id, tenant_id, model_version, accuracy, measured_at)
SELECT md5('accuracy:' || a)::uuid, md5('tenant:' || ((a - 1) % 3 + 1))::uuid, 'v' || (a % 4 + 1),
       0.9 + (a % 9) / 100.0, timestamptz '2025-06-01 09:00+00' + (a || ' days')::interval
FROM generate_series(1, 12) AS a;

INSERT INTO public.vision_metrics (id, tenant_id, metric, value, measured_at)
SELECT md5('metric:' || m)::uuid, md5('tenant:' || ((m - 1) % 3 + 1))::uuid,
       (ARRAY['latency_ms', 'precision', 'recall'])[m % 3 + 1], 10 + m * 1.5,
       timestamptz '2025-06-01 09:00+00' + (m || ' hours')::interval
FROM generate_series(1, 18) AS m;

-- 8 conversations about vehicle c, 30 messages
INSERT INTO public.conversations (id, tenant_id, vehicle_id, title, created_at)
SELECT md5('conversation:' || c)::uuid, md5('tenant:' || ((c - 1) % 3 + 1))::uuid, md5('vehicle:' || c)::uuid,
       'About vehicle ' || c, timestamptz '2025-07-01 09:00+00'
FROM generate_series(1, 8) AS c;

INSERT INTO public.conversation_messages (id, conversation_id, sender, body, created_at)
SELECT md5('message:' || x)::uuid, md5('conversation:' || ((x - 1) % 8 + 1))::uuid,
       md5('user:' || ((((x - 1) % 8 + 1) - 1) % 3 + 1))::uuid, 'Message ' || x,
       timestamptz '2025-07-01 10:00+00' + (x || ' minutes')::interval
FROM generate_series(1, 30) AS x;

INSERT INTO public.vehicle_spec_enhancements (id, tenant_id, vehicle_id, spec, source)
SELECT md5('spec:' || s)::uuid, md5('tenant:' || ((s - 1) % 3 + 1))::uuid, md5('vehicle:' || s)::uuid,
       jsonb_build_object('engine', (ARRAY['petrol', 'diesel', 'electric'])[s % 3 + 1]), 'vision'
FROM generate_series(1, 15) AS s;

ANALYZE;
