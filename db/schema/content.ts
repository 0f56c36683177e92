// E-mail templates, branding, tracking scripts, contact form submissions: table types (see db/migrations/0006_content.ts).

export interface EmailTemplatesTable {
  id: string; organization_id: string; name: string; subject: string; html_content: string; text_content: string;
  text_content_generated: number; created_at: string; updated_at: string;
}

export interface BrandingTable {
  organization_id: string;
  logo_app_url: string | null; logo_square_url: string | null; logo_email_url: string | null; logo_login_url: string | null;
  updated_at: string;
}

export interface TrackingScriptsTable {
  organization_id: string;
  header_script: string | null; body_script: string | null; footer_script: string | null;
  facebook_pixel_id: string | null; google_analytics_id: string | null;
  updated_at: string;
}

export interface ContactFormSubmissionsTable {
  id: string; name: string; email: string; company: string | null; inquiry_type: string; subject: string; message: string;
  ip: string | null; user_agent: string | null; created_at: string;
}

export interface ContentTables {
  email_templates: EmailTemplatesTable;
  branding: BrandingTable;
  tracking_scripts: TrackingScriptsTable;
  contact_form_submissions: ContactFormSubmissionsTable;
}
