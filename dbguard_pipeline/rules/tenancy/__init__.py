"""Tenancy rules: does every table of tenant data carry the tenant, and is the tenant column sound?"""
