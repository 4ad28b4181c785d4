-- The dbguard demo: a multi-tenant vehicle-inspection SaaS, as it stood when its first validation ran.
-- Tenancy: the application sets app.current_tenant_id (GUC) and runs as role authenticated.
-- Planted problems (docs/demo.md lists the findings dbguard must report):
--   garages                         tenant_id present, RLS disabled                      (critical)
--   9 tables                        RLS enabled, policy USING (true)                     (warnings)
--   conversations                   policy casts current_setting() without nullif, per row
--   conversation_messages           no tenant_id; reaches tenants through conversations  (critical)
--   vehicle_spec_enhancements       tenant_id has no foreign key to tenants
--   event_photos.image_id           foreign key without an index
-- vision_accuracy and vision_metrics are done right and must come out clean.

CREATE TABLE public.tenants (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    slug text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.profiles (
    id uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
    tenant_id uuid NOT NULL REFERENCES public.tenants (id),
    full_name text NOT NULL,
    role text NOT NULL DEFAULT 'inspector' CHECK (role IN ('owner', 'admin', 'inspector')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX profiles_tenant_id_idx ON public.profiles (tenant_id);

CREATE TABLE public.user_tenants (
    user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    tenant_id uuid NOT NULL REFERENCES public.tenants (id) ON DELETE CASCADE,
    role text NOT NULL DEFAULT 'member',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, tenant_id)
);
CREATE INDEX user_tenants_tenant_id_idx ON public.user_tenants (tenant_id);

CREATE TABLE public.garages (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES public.tenants (id),
    name text NOT NULL,
    address text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX garages_tenant_id_idx ON public.garages (tenant_id);

CREATE TABLE public.vehicles (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES public.tenants (id),
    garage_id uuid REFERENCES public.garages (id),
    vin text NOT NULL,
    make text NOT NULL,
    model text NOT NULL,
    year integer CHECK (year BETWEEN 1950 AND 2100),
    deleted_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, vin)
);
CREATE INDEX vehicles_garage_id_idx ON public.vehicles (garage_id);

CREATE TABLE public.vehicle_images (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES public.tenants (id),
    vehicle_id uuid NOT NULL REFERENCES public.vehicles (id) ON DELETE CASCADE,
    storage_path text NOT NULL,
    is_primary boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX vehicle_images_tenant_vehicle_idx ON public.vehicle_images (tenant_id, vehicle_id);
CREATE INDEX vehicle_images_vehicle_id_idx ON public.vehicle_images (vehicle_id);

CREATE TABLE public.photo_metadata (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES public.tenants (id),
    image_id uuid NOT NULL REFERENCES public.vehicle_images (id) ON DELETE CASCADE,
    width integer NOT NULL,
    height integer NOT NULL,
    exif jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX photo_metadata_tenant_id_idx ON public.photo_metadata (tenant_id);
CREATE INDEX photo_metadata_image_id_idx ON public.photo_metadata (image_id);

CREATE TABLE public.capture_sessions (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES public.tenants (id),
    vehicle_id uuid NOT NULL REFERENCES public.vehicles (id),
    started_by uuid NOT NULL REFERENCES auth.users (id),
    status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    started_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX capture_sessions_tenant_id_idx ON public.capture_sessions (tenant_id);
CREATE INDEX capture_sessions_vehicle_id_idx ON public.capture_sessions (vehicle_id);
CREATE INDEX capture_sessions_started_by_idx ON public.capture_sessions (started_by);

CREATE TABLE public.vehicle_events (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES public.tenants (id),
    vehicle_id uuid NOT NULL REFERENCES public.vehicles (id),
    event_type text NOT NULL,
    date date NOT NULL,
    notes text
);
CREATE INDEX vehicle_events_tenant_vehicle_date_idx ON public.vehicle_events (tenant_id, vehicle_id, date);
CREATE INDEX vehicle_events_vehicle_id_idx ON public.vehicle_events (vehicle_id);

CREATE TABLE public.event_photos (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES public.tenants (id),
    event_id uuid NOT NULL REFERENCES public.vehicle_events (id) ON DELETE CASCADE,
    image_id uuid NOT NULL REFERENCES public.vehicle_images (id)
);
CREATE INDEX event_photos_tenant_id_idx ON public.event_photos (tenant_id);
CREATE INDEX event_photos_event_id_idx ON public.event_photos (event_id);
-- event_photos.image_id deliberately has no index

CREATE TABLE public.vehicle_event_audit_logs (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES public.tenants (id),
    event_id uuid NOT NULL REFERENCES public.vehicle_events (id) ON DELETE CASCADE,
    action text NOT NULL,
    actor uuid REFERENCES auth.users (id),
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX vehicle_event_audit_logs_tenant_id_idx ON public.vehicle_event_audit_logs (tenant_id);
CREATE INDEX vehicle_event_audit_logs_event_id_idx ON public.vehicle_event_audit_logs (event_id);
CREATE INDEX vehicle_event_audit_logs_actor_idx ON public.vehicle_event_audit_logs (actor);

CREATE TABLE public.vision_accuracy (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES public.tenants (id),
    model_version text NOT NULL,
    accuracy numeric(5, 4) NOT NULL CHECK (accuracy BETWEEN 0 AND 1),
    measured_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX vision_accuracy_tenant_id_idx ON public.vision_accuracy (tenant_id, measured_at);

CREATE TABLE public.vision_metrics (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES public.tenants (id),
    metric text NOT NULL,
    value double precision NOT NULL,
    measured_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX vision_metrics_tenant_id_idx ON public.vision_metrics (tenant_id, metric);

CREATE TABLE public.conversations (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES public.tenants (id),
    vehicle_id uuid REFERENCES public.vehicles (id),
    title text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_tenant_id_idx ON public.conversations (tenant_id);
CREATE INDEX conversations_vehicle_id_idx ON public.conversations (vehicle_id);

CREATE TABLE public.conversation_messages (
    id uuid PRIMARY KEY,
    conversation_id uuid NOT NULL REFERENCES public.conversations (id) ON DELETE CASCADE,
    sender uuid REFERENCES auth.users (id),
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversation_messages_conversation_id_idx ON public.conversation_messages (conversation_id);
CREATE INDEX conversation_messages_sender_idx ON public.conversation_messages (sender);

CREATE TABLE public.vehicle_spec_enhancements (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL,  -- the foreign key to tenants was forgotten
    vehicle_id uuid NOT NULL REFERENCES public.vehicles (id) ON DELETE CASCADE,
    spec jsonb NOT NULL DEFAULT '{}'::jsonb,
    source text NOT NULL
);
CREATE INDEX vehicle_spec_enhancements_tenant_id_idx ON public.vehicle_spec_enhancements (tenant_id);
CREATE INDEX vehicle_spec_enhancements_vehicle_id_idx ON public.vehicle_spec_enhancements (vehicle_id);

-- ------------------------------------------------------------------ row level security
ALTER TABLE public.tenants ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenants_read_own ON public.tenants FOR SELECT TO authenticated
    USING (id = (SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid));

-- garages: has tenant_id, RLS never enabled.

-- The nine tables whose policy lets every row through.
ALTER TABLE public.profiles ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Enable read access for all users" ON public.profiles FOR SELECT USING (true);
ALTER TABLE public.user_tenants ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Enable read access for all users" ON public.user_tenants FOR SELECT USING (true);
ALTER TABLE public.vehicles ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Enable read access for all users" ON public.vehicles FOR SELECT USING (true);
ALTER TABLE public.vehicle_images ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Enable read access for all users" ON public.vehicle_images FOR SELECT USING (true);
ALTER TABLE public.photo_metadata ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Enable read access for all users" ON public.photo_metadata FOR SELECT USING (true);
ALTER TABLE public.capture_sessions ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Enable read access for all users" ON public.capture_sessions FOR SELECT USING (true);
ALTER TABLE public.vehicle_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Enable read access for all users" ON public.vehicle_events FOR SELECT USING (true);
ALTER TABLE public.event_photos ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Enable read access for all users" ON public.event_photos FOR SELECT USING (true);
ALTER TABLE public.vehicle_event_audit_logs ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Enable read access for all users" ON public.vehicle_event_audit_logs FOR SELECT USING (true);

-- The two tables done right: one policy for every command, the tenant pinned for reads and writes,
-- the context read once per query and safe when the setting is reset.
ALTER TABLE public.vision_accuracy ENABLE ROW LEVEL SECURITY;
CREATE POLICY vision_accuracy_tenant_isolation ON public.vision_accuracy FOR ALL TO authenticated
    USING (tenant_id = (SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid));
ALTER TABLE public.vision_metrics ENABLE ROW LEVEL SECURITY;
CREATE POLICY vision_metrics_tenant_isolation ON public.vision_metrics FOR ALL TO authenticated
    USING (tenant_id = (SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid));

-- conversations: the policy the original generator wrote (cast without nullif, evaluated per row).
ALTER TABLE public.conversations ENABLE ROW LEVEL SECURITY;
CREATE POLICY conversations_tenant_isolation ON public.conversations FOR ALL TO authenticated
    USING (tenant_id = current_setting('app.current_tenant_id', true)::uuid)
    WITH CHECK (tenant_id = current_setting('app.current_tenant_id', true)::uuid);

-- conversation_messages: no tenant_id and no RLS.

ALTER TABLE public.vehicle_spec_enhancements ENABLE ROW LEVEL SECURITY;
CREATE POLICY vehicle_spec_enhancements_tenant_isolation ON public.vehicle_spec_enhancements FOR ALL TO authenticated
    USING (tenant_id = (SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid));

-- Supabase grants the API roles table privileges and leaves isolation to RLS.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO anon, authenticated, service_role;

-- A view done right (PostgreSQL 15+: runs with the caller's rights, so RLS applies).
DO $$
BEGIN
  IF current_setting('server_version_num')::int >= 150000 THEN
    EXECUTE $v$CREATE VIEW public.vehicle_overview WITH (security_invoker = true) AS
      SELECT v.id, v.tenant_id, v.vin, v.make, v.model, count(i.id) AS images
      FROM public.vehicles v LEFT JOIN public.vehicle_images i ON i.vehicle_id = v.id
      GROUP BY v.id$v$;
    EXECUTE 'GRANT SELECT ON public.vehicle_overview TO authenticated';
  END IF;
END
$$;
